"""Off-policy adapter: OmniSafe's, with the vector-env warm-up and the final state fixed, unsafe
steps counted and the risk estimate at each episode's start logged against the realised cost."""

from __future__ import annotations

from collections import deque
from typing import Any, Callable

import torch
from omnisafe.adapter import OffPolicyAdapter
from omnisafe.common.buffer import VectorOffPolicyBuffer
from omnisafe.common.logger import Logger
from omnisafe.models.actor_critic.actor_q_critic import ActorQCritic

__all__ = ['CALIBRATION_KEYS', 'StatewiseOffPolicyAdapter']

#: logged once per epoch (see :meth:`StatewiseOffPolicyAdapter.calibration`)
CALIBRATION_KEYS = (
    'Calibration/StartFHat',
    'Calibration/StartCost',
    'Calibration/StartBias',
    'Calibration/StartRankCorr',
)


class StatewiseOffPolicyAdapter(OffPolicyAdapter):
    """:class:`omnisafe.adapter.OffPolicyAdapter` with two changes.

    1. The random-action warm-up draws one action *per environment*. OmniSafe 0.5.0 draws a
       single action of shape ``(1, act_dim)``, so with ``vector_env_nums > 1`` gymnasium's
       async vector env waits forever for the environments that got none.
    2. The next state of an episode's last transition is the episode's true final state. With
       one Safety-Gymnasium env, the simulator's own auto-reset sits under OmniSafe's
       ``AutoReset``, so ``info['final_observation']`` is the *next* episode's first state and
       the true one is in ``info['final_info']['final_observation']`` (OmniSafe 0.5.0 stores the
       former, so every time-limit transition bootstraps from an unrelated state).
    3. It counts the unsafe steps (``cost > 0``) of each episode and logs them as
       ``Metrics/EpUnsafeSteps``: state-wise safety is about how often the agent is unsafe, not
       only about the summed episode cost.
    4. Calibration of the risk signal, on any environment: when :attr:`risk_fn` is set (the
       algorithms set it with :meth:`configure_risk`: ``F_hat`` for the Lagrangian family, the
       CDF ``G`` for SAC-FPI), each episode's start state is scored when the episode starts and
       compared, when it ends, with the realised counterpart of the risk signal: the discounted
       cost ``sum_t gamma^t c_t`` (indicator costs if asked), or for a constraint decay function
       ``gamma^T`` with ``T`` the first step with cost (0 if none); see :meth:`calibration`.
    """

    #: realised quantities a risk signal can be calibrated against
    RISK_KINDS = ('discounted_cost', 'first_cost_decay')
    risk_kind: str = 'discounted_cost'
    risk_indicator: bool = True
    calibration_window: int = 50
    #: discount of the realised discounted cost (:meth:`configure_risk`; None: ``algo_cfgs.gamma``)
    risk_gamma: float | None = None

    _ep_unsafe: torch.Tensor
    _ep_disc_cost: torch.Tensor
    _ep_start_risk: torch.Tensor
    _ep_hit: torch.Tensor
    #: maps a batch of (normalised) observations to F_hat; None turns calibration off
    risk_fn: Callable[[torch.Tensor], torch.Tensor] | None = None

    def configure_risk(
        self,
        risk_fn: Callable[[torch.Tensor], torch.Tensor],
        kind: str,
        indicator: bool,
        window: int,
        gamma: float | None = None,
    ) -> None:
        """Set the risk estimate scored at episode starts and what it is compared with.

        Args:
            risk_fn: maps a batch of (normalised) observations to the risk estimate.
            kind: ``discounted_cost`` (``sum_t gamma^t c_t``) or ``first_cost_decay``
                (``gamma^T`` at the first step ``T`` with cost, 0 if none).
            indicator: count each step's cost as ``1[c > 0]`` (``discounted_cost`` only).
            window: number of finished episodes the figures average over.
            gamma: discount of the realised counterpart (None: ``algo_cfgs.gamma``; the
                Lagrangian family passes its feasibility function's, ``alam_cfgs.cost_gamma``).
        """
        if kind not in self.RISK_KINDS:
            raise ValueError(f'risk kind must be one of {self.RISK_KINDS}, got {kind!r}')
        self.risk_fn = risk_fn
        self.risk_kind = kind
        self.risk_indicator = indicator
        self.calibration_window = window
        self.risk_gamma = gamma
        self._reset_log()

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
            self._score_episode_starts()
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
                        real_next_obs[idx] = self._true_final_obs(info, idx)
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

    def _true_final_obs(self, info: dict[str, Any], idx: int) -> torch.Tensor:
        """The final state of env ``idx``'s finished episode, as the agent observes states (see 2)."""
        final_info = info.get('final_info')
        if isinstance(final_info, dict) and 'final_observation' in final_info:
            # a single env whose own auto-reset ran below OmniSafe's (see class doc, 2)
            obs = torch.as_tensor(final_info['final_observation'], dtype=torch.float32)
            obs = obs.reshape(-1).to(self._device)
            normalizer = self.save().get('obs_normalizer')
            if normalizer is not None:
                # the normaliser's own formula, without pushing this state into its statistics
                # (OmniSafe's ObsNormalize already pushed the wrong one)
                obs = torch.clamp((obs - normalizer.mean) / normalizer.std, -normalizer._clip, normalizer._clip)
            return obs
        return info['final_observation'][idx]

    def _score_episode_starts(self) -> None:
        """``F_hat`` of the start state of every episode that has not been scored yet."""
        if self.risk_fn is None:
            return
        fresh = torch.isnan(self._ep_start_risk)
        if fresh.any():
            with torch.no_grad():
                risk = self.risk_fn(self._current_obs).reshape(-1).cpu()
            self._ep_start_risk[fresh] = risk[fresh]

    def _log_value(self, reward: torch.Tensor, cost: torch.Tensor, info: dict[str, Any]) -> None:
        cost_t = info.get('original_cost', cost).cpu().reshape(-1)
        hit = cost_t > 0
        if self.risk_kind == 'first_cost_decay':
            step_cost = (hit & ~self._ep_hit).float()
        elif self.risk_indicator:
            step_cost = hit.float()
        else:
            step_cost = cost_t
        gamma = self._cfgs.algo_cfgs.gamma if self.risk_gamma is None else self.risk_gamma
        self._ep_disc_cost += gamma**self._ep_len * step_cost
        self._ep_hit |= hit
        super()._log_value(reward=reward, cost=cost, info=info)
        self._ep_unsafe += (cost_t > 0).float()

    def _log_metrics(self, logger: Logger, idx: int) -> None:
        super()._log_metrics(logger, idx)
        logger.store({'Metrics/EpUnsafeSteps': self._ep_unsafe[idx]})
        if self.risk_fn is not None and not torch.isnan(self._ep_start_risk[idx]):
            self._calibration.append((float(self._ep_start_risk[idx]), float(self._ep_disc_cost[idx])))

    def _reset_log(self, idx: int | None = None) -> None:
        super()._reset_log(idx)
        if idx is None:
            num_envs = self._env.num_envs
            self._ep_unsafe = torch.zeros(num_envs)
            self._ep_disc_cost = torch.zeros(num_envs)
            self._ep_start_risk = torch.full((num_envs,), float('nan'))
            self._ep_hit = torch.zeros(num_envs, dtype=torch.bool)
            self._calibration: deque[tuple[float, float]] = deque(maxlen=self.calibration_window)
        else:
            self._ep_unsafe[idx] = 0.0
            self._ep_hit[idx] = False
            self._ep_disc_cost[idx] = 0.0
            self._ep_start_risk[idx] = float('nan')

    #: the adapter's own per-episode tensors (OmniSafe's and the plugin's)
    _EPISODE_TENSORS = ('_ep_ret', '_ep_cost', '_ep_len', '_ep_unsafe', '_ep_disc_cost', '_ep_start_risk', '_ep_hit')

    def state_dict(self) -> dict[str, Any]:
        """The training and evaluation environments' state and this adapter's episode counters
        (see :mod:`omnisafe_alam.glue.checkpoint`)."""
        from omnisafe_alam.glue.checkpoint import env_state

        return {
            'env': env_state(self._env),
            'eval_env': env_state(self._eval_env),
            'current_obs': self._current_obs.clone(),
            'episodes': {name: getattr(self, name).clone() for name in self._EPISODE_TENSORS},
            'calibration': [list(pair) for pair in self._calibration],
        }

    def load_state_dict(self, state: dict[str, Any], reset_seed: int) -> bool:
        """Restore :meth:`state_dict`; returns whether the episode in progress continues.

        An environment that cannot give its state (Safety-Gymnasium's simulator) keeps only its
        wrappers' state (normalisers): it is reset with ``reset_seed``, its episode in progress
        starts afresh and its counters restart at zero.
        """
        from omnisafe_alam.glue.checkpoint import load_env_state

        load_env_state(self._eval_env, state['eval_env'])
        self._calibration.clear()
        self._calibration.extend(tuple(pair) for pair in state['calibration'])
        if load_env_state(self._env, state['env']):
            self._current_obs = state['current_obs'].to(self._device)
            for name, value in state['episodes'].items():
                getattr(self, name).copy_(value)
            return True
        self._current_obs, _ = self.reset(seed=reset_seed)
        calibration = list(self._calibration)
        self._reset_log()
        self._calibration.extend(calibration)
        return False

    def calibration(self) -> dict[str, float]:
        """Start-state risk estimate against its realised counterpart over the last episodes.

        Over the last :attr:`calibration_window` finished episodes: the mean estimate at their
        start states, the mean realised value (see class doc, 4), their mean difference (bias; > 0
        is pessimistic) and Spearman's rank correlation (NaN with fewer than 3 episodes or no
        spread). A truncated episode's realised cost omits what would have come after the time
        limit.
        """
        from omnisafe_alam.core.functional import rank_correlation

        if not self._calibration:
            return dict.fromkeys(CALIBRATION_KEYS, float('nan'))
        pairs = torch.tensor(list(self._calibration))
        predicted, realised = pairs[:, 0], pairs[:, 1]
        return {
            'Calibration/StartFHat': float(predicted.mean()),
            'Calibration/StartCost': float(realised.mean()),
            'Calibration/StartBias': float((predicted - realised).mean()),
            'Calibration/StartRankCorr': rank_correlation(predicted, realised),
        }

    def eval_policy(self, episode: int, agent: ActorQCritic, logger: Logger) -> None:
        """OmniSafe's evaluation, then the calibration figures (OmniSafe calls this once per epoch)."""
        super().eval_policy(episode, agent, logger)  # type: ignore[arg-type]
        if self.risk_fn is not None:
            logger.store(self.calibration())
