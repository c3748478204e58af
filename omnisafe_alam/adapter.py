"""Off-policy adapter: OmniSafe's, with the vector-env warm-up fixed and unsafe steps counted."""

from __future__ import annotations

from typing import Any

import torch
from omnisafe.adapter import OffPolicyAdapter
from omnisafe.common.buffer import VectorOffPolicyBuffer
from omnisafe.common.logger import Logger
from omnisafe.models.actor_critic.actor_q_critic import ActorQCritic

__all__ = ['StatewiseOffPolicyAdapter']


class StatewiseOffPolicyAdapter(OffPolicyAdapter):
    """:class:`omnisafe.adapter.OffPolicyAdapter` with two changes.

    1. The random-action warm-up draws one action *per environment*. OmniSafe 0.5.0 draws a
       single action of shape ``(1, act_dim)``, so with ``vector_env_nums > 1`` gymnasium's
       async vector env waits forever for the environments that got none.
    2. It counts the unsafe steps (``cost > 0``) of each episode and logs them as
       ``Metrics/EpUnsafeSteps``: state-wise safety is about how often the agent is unsafe, not
       only about the summed episode cost.
    """

    _ep_unsafe: torch.Tensor

    def rollout(  # pylint: disable=too-many-arguments
        self,
        rollout_step: int,
        agent: ActorQCritic,
        buffer: VectorOffPolicyBuffer,
        logger: Logger,
        use_rand_action: bool,
    ) -> None:
        """Roll out ``rollout_step`` vector steps and store them (as OmniSafe, see class doc)."""
        for _ in range(rollout_step):
            if use_rand_action:
                shape = (self._env.num_envs, *self.action_space.shape)  # type: ignore[misc]
                act = (torch.rand(shape) * 2 - 1).to(self._device)
            else:
                act = agent.step(self._current_obs, deterministic=False)
            next_obs, reward, cost, terminated, truncated, info = self.step(act)

            self._log_value(reward=reward, cost=cost, info=info)
            real_next_obs = next_obs.clone()
            for idx, done in enumerate(torch.logical_or(terminated, truncated)):
                if done:
                    if 'final_observation' in info:
                        real_next_obs[idx] = info['final_observation'][idx]
                    self._log_metrics(logger, idx)
                    self._reset_log(idx)

            buffer.store(
                obs=self._current_obs,
                act=act,
                reward=reward,
                cost=cost,
                # a time-limit truncation is not a terminal state: bootstrap through it
                done=torch.logical_and(terminated, torch.logical_xor(terminated, truncated)),
                next_obs=real_next_obs,
            )
            self._current_obs = next_obs

    def _log_value(self, reward: torch.Tensor, cost: torch.Tensor, info: dict[str, Any]) -> None:
        super()._log_value(reward=reward, cost=cost, info=info)
        self._ep_unsafe += (info.get('original_cost', cost).cpu() > 0).float()

    def _log_metrics(self, logger: Logger, idx: int) -> None:
        super()._log_metrics(logger, idx)
        logger.store({'Metrics/EpUnsafeSteps': self._ep_unsafe[idx]})

    def _reset_log(self, idx: int | None = None) -> None:
        super()._reset_log(idx)
        if idx is None:
            self._ep_unsafe = torch.zeros(self._env.num_envs)
        else:
            self._ep_unsafe[idx] = 0.0
