"""What the plugin's known-answer tasks share: a vectorised torch CMDP that resets itself.

A task subclass defines its spaces, its start box (or :meth:`VectorTask._sample_start`) and
:meth:`VectorTask._transition`; this base keeps the step counters, the time limit, the
auto-reset (for one env and for many, which OmniSafe's ``AutoReset`` wrapper does not support)
and reports the true final state of every finished episode in ``info['final_observation']``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch
from gymnasium import spaces
from omnisafe.envs.core import CMDP

__all__ = ['VectorTask', 'simulate']


class VectorTask(CMDP):
    """Base of the known-answer tasks (not registered itself).

    ``reset(options={'state': tensor})`` starts every env from the given state(s) (shape
    ``(state_dim,)`` or ``(num_envs, state_dim)``) instead of the start distribution.
    """

    metadata: ClassVar[dict[str, int]] = {}
    need_auto_reset_wrapper = False
    need_time_limit_wrapper = False
    #: episode length (truncation); a subclass may also terminate earlier
    horizon: ClassVar[int] = 1
    obs_low: ClassVar[list[float]] = [-1.0]
    obs_high: ClassVar[list[float]] = [1.0]
    #: start states are drawn uniformly from this box (override :meth:`_sample_start` otherwise)
    start_low: ClassVar[list[float]] = [-1.0]
    start_high: ClassVar[list[float]] = [1.0]
    act_dim: ClassVar[int] = 1

    def __init__(
        self,
        env_id: str,
        num_envs: int = 1,
        device: str | torch.device = 'cpu',
        reward_scale: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(env_id)
        reward_scale = float(reward_scale)
        if not reward_scale > 0.0 or reward_scale == float('inf'):
            raise ValueError(f'env_cfgs.reward_scale must be a finite number > 0, got {reward_scale!r}')
        #: every reward is multiplied by this (``env_cfgs.reward_scale``): the same task, with its
        #: optimal policy and feasible set unchanged, at another reward scale
        self.reward_scale = reward_scale
        self._num_envs = num_envs
        self._device = torch.device(device)
        self._observation_space = spaces.Box(
            low=torch.tensor(self.obs_low).numpy(),
            high=torch.tensor(self.obs_high).numpy(),
        )
        self._action_space = spaces.Box(low=-1.0, high=1.0, shape=(self.act_dim,))
        self._generator = torch.Generator().manual_seed(0)
        self._state = torch.zeros(num_envs, len(self.obs_low))
        self._t = torch.zeros(num_envs, dtype=torch.long)
        self.env_spec_log: dict[str, Any] = {}

    # ---------------------------------------------------------------- task hooks
    def _sample_start(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` start states, shape ``(n, state_dim)``: uniform in ``[start_low, start_high]``."""
        low, high = torch.tensor(self.start_low), torch.tensor(self.start_high)
        return low + torch.rand(n, len(low), generator=generator) * (high - low)

    def _transition(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(next_state, reward, cost, terminated)`` for a batch of states and actions in [-1, 1]."""
        raise NotImplementedError

    # ---------------------------------------------------------------- CMDP
    @property
    def max_episode_steps(self) -> int:
        return self.horizon

    def _out(self, value: torch.Tensor) -> torch.Tensor:
        """Batched for vector envs; unbatched for one env (OmniSafe's Unsqueeze adds the dim)."""
        value = value.to(self._device)
        return value.squeeze(0) if self._num_envs == 1 else value

    def reset(
        self,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if seed is not None:
            self.set_seed(seed)
        if options is not None and 'state' in options:
            state = torch.as_tensor(options['state'], dtype=torch.float32)
            self._state = state.reshape(-1, self._state.shape[-1]).expand_as(self._state).clone()
        else:
            self._state = self._sample_start(self._num_envs, self._generator)
        self._t.zero_()
        return self._out(self._state.clone()), {}

    def step(
        self,
        action: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, dict[str, Any]]:
        act = torch.as_tensor(action, dtype=torch.float32).cpu().reshape(self._num_envs, -1)
        next_state, reward, cost, terminated = self._transition(self._state, act.clamp(-1.0, 1.0))
        reward = reward * self.reward_scale
        self._t += 1
        truncated = (self._t >= self.horizon) & ~terminated
        done = terminated | truncated
        final_obs = next_state.clone()
        if done.any():
            fresh = self._sample_start(int(done.sum()), self._generator)
            next_state = next_state.clone()
            next_state[done] = fresh
            self._t[done] = 0
        self._state = next_state
        info = {'final_observation': self._out(final_obs)}
        return (
            self._out(next_state.clone()),
            self._out(reward),
            self._out(cost),
            self._out(terminated),
            self._out(truncated),
            info,
        )

    def set_seed(self, seed: int) -> None:
        self._generator.manual_seed(seed)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Everything the next steps depend on: states, step counters and the start-state RNG."""
        return {'state': self._state.clone(), 't': self._t.clone(), 'generator': self._generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Restore :meth:`state_dict` (a mid-episode resume continues the same episodes)."""
        if state['state'].shape != self._state.shape:
            raise ValueError(f"state shape {tuple(state['state'].shape)} != {tuple(self._state.shape)}")
        self._state = state['state'].clone()
        self._t = state['t'].clone()
        self._generator.set_state(state['generator'])

    def render(self) -> Any:
        raise NotImplementedError(f'{type(self).__name__} has nothing to render')

    def close(self) -> None:
        """Nothing to release."""


def simulate(
    task: type[VectorTask],
    policy: Callable[[torch.Tensor], torch.Tensor],
    start: torch.Tensor,
    gamma: float = 0.99,
) -> dict[str, torch.Tensor]:
    """Roll a deterministic state-feedback policy from each start state for one episode.

    Args:
        task: the task class (its ``_transition`` and ``horizon`` are used; no resets).
        policy: maps observations ``(N, obs_dim)`` to actions ``(N, act_dim)``.
        start: ``(N, obs_dim)`` start states.
        gamma: discount of ``discounted_cost``.

    Returns:
        ``return`` and ``cost`` (undiscounted episode sums), ``discounted_cost``
        (``sum_t gamma^t c_t``) and ``states`` ``(horizon + 1, N, obs_dim)`` (frozen after an
        episode terminates).
    """
    env = task(task._support_envs[0], num_envs=start.shape[0])
    state = start.clone().float()
    zeros = torch.zeros(len(state))
    states, ret, cost, disc = [state], zeros.clone(), zeros.clone(), zeros.clone()
    alive = torch.ones(len(state), dtype=torch.bool)
    for t in range(task.horizon):
        with torch.no_grad():
            act = policy(state).reshape(len(state), -1).clamp(-1.0, 1.0)
        next_state, reward, step_cost, terminated = env._transition(state, act)
        ret += reward * alive
        cost += step_cost * alive
        disc += gamma**t * step_cost * alive
        state = torch.where(alive.unsqueeze(-1), next_state, state)
        alive &= ~terminated
        states.append(state)
    return {'return': ret, 'cost': cost, 'discounted_cost': disc, 'states': torch.stack(states)}
