"""``StatewiseBraking-v0``: momentum makes states infeasible before the hazard is reached.

A point on a line with position ``x`` and velocity ``v`` (the observation is ``(x, v)``). The
action ``a`` in ``[-1, 1]`` is an acceleration; with ``dt = 0.1`` the dynamics are semi-implicit
Euler::

    v' = clip(v + ACCEL * a * dt, -V_MAX, V_MAX),    x' = x + v' dt   (x' clipped to the walls)

The hazard is ``x > X_HAZARD``: the step costs ``c = 1[x' > X_HAZARD]``. The reward is the
progress ``(x' - x) / dt``, so an episode's return is ``(x_T - x_0) / dt``: the agent is paid for
getting as far as it can, and the unconstrained optimum drives through the hazard to the far wall.
Episodes last ``HORIZON`` steps (a time limit: the critics bootstrap through it).

Known answers (docs/known_answer.md):

- **Feasible set.** Full braking minimises every future position at once, so it is the safest
  policy and ``F*(x, v)`` (the least discounted cost any policy can reach) is the discounted
  count of hazard steps along the full-braking trajectory (:func:`min_discounted_cost`). A state
  is feasible when ``F* <= d``; any violation comes within a few steps, so for ``d < 0.5`` this
  is exactly "full braking stops at or before the hazard" (:func:`feasibility_margin` ``>= 0``).
  At ``v = 1`` the feasible set ends at ``x = 0.55``, 0.45 before the hazard.
- **Optimal safe return** from a start ``(x_0, v_0)``: no safe trajectory passes ``X_HAZARD``, so
  the return is at most ``(X_HAZARD - x_0) / dt``; :func:`parking_plan` reaches ``X_HAZARD``
  exactly at rest within the horizon from every start state, so the bound is attained.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from omnisafe_alam.envs import base
from omnisafe_alam.envs.base import VectorTask

__all__ = [
    'ENV_ID',
    'StatewiseBrakingEnv',
    'feasibility_margin',
    'min_discounted_cost',
    'optimal_return',
    'parking_plan',
    'simulate',
]

ENV_ID = 'StatewiseBraking-v0'
DT = 0.1
ACCEL = 1.0
V_MAX = 2.0
X_HAZARD = 1.0
X_WALLS = (-1.0, 3.0)
HORIZON = 50
#: start states: x_0 ~ U[X0_RANGE], v_0 ~ U[V0_RANGE] (all feasible: tested)
X0_RANGE = (0.0, 0.4)
V0_RANGE = (0.0, 0.5)
#: the state grid on which F_hat's classification of the feasible set is scored
GRID_X = (0.0, 1.0)
GRID_V = (0.0, 1.2)


def step_dynamics(x: torch.Tensor, v: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step of the semi-implicit Euler dynamics (module doc); the walls stop the point."""
    v_next = torch.clamp(v + ACCEL * a * DT, -V_MAX, V_MAX)
    x_free = x + v_next * DT
    x_next = torch.clamp(x_free, *X_WALLS)
    v_next = torch.where(x_next == x_free, v_next, torch.zeros_like(v_next))
    return x_next, v_next


def _braking_positions(x: torch.Tensor, v: torch.Tensor, steps: int) -> torch.Tensor:
    """Positions ``x_1..x_steps`` under full braking ``a = -1``, shape ``(steps, *x.shape)``."""
    positions = []
    for _ in range(steps):
        x, v = step_dynamics(x, v, -torch.ones_like(x))
        positions.append(x)
    return torch.stack(positions)


def feasibility_margin(state: torch.Tensor) -> torch.Tensor:
    """``X_HAZARD`` minus the farthest position full braking reaches: ``>= 0`` iff feasible.

    Args:
        state: ``(..., 2)`` states ``(x, v)``.

    Returns:
        The margin, shape ``(...)``.
    """
    x, v = state[..., 0].double(), state[..., 1].double()
    steps = math.ceil(V_MAX / (ACCEL * DT)) + 1  # braking from V_MAX reverses within this many steps
    return (X_HAZARD - torch.maximum(x, _braking_positions(x, v, steps).amax(dim=0))).float()


def min_discounted_cost(state: torch.Tensor, gamma: float, steps: int = 400) -> torch.Tensor:
    r"""``F*(x, v)``: the least discounted cost of any policy, attained by full braking.

    .. math::

        F^*(x_0) = \sum_{t \ge 0} \gamma^t \mathbf 1[x_{t+1} > X_H], \qquad a_t = -1

    (the cost of step ``t`` is that of the state it leads to), truncated after ``steps`` terms.
    """
    x, v = state[..., 0].double(), state[..., 1].double()
    hazard = (_braking_positions(x, v, steps) > X_HAZARD).double()
    weights = gamma ** torch.arange(steps, dtype=torch.float64).reshape(-1, *([1] * x.dim()))
    return (weights * hazard).sum(dim=0).float()


def parking_plan(x0: float, v0: float) -> list[float]:
    """Open-loop actions that bring ``(x0, v0)`` (``v0 >= 0``) to rest exactly at ``X_HAZARD``.

    First brake to rest (the last braking step only partly), then accelerate at ``a`` for ``n``
    steps and brake at ``-a`` for ``n`` steps: with semi-implicit Euler that covers exactly
    ``a * ACCEL * dt^2 * n^2``, so ``n = ceil(sqrt(D / (ACCEL dt^2)))`` and ``a = D / (ACCEL dt^2 n^2)``
    for the remaining distance ``D``.
    """
    if v0 < 0:
        raise ValueError(f'parking_plan needs v0 >= 0, got {v0}')
    actions: list[float] = []
    x, v = x0, v0
    while v > 0:
        a = -min(1.0, v / (ACCEL * DT))
        actions.append(a)
        v = v + ACCEL * a * DT
        x = x + v * DT
    distance = X_HAZARD - x
    if distance < 0:
        raise ValueError(f'start ({x0}, {v0}) cannot stop before the hazard')
    if distance > 0:
        n = math.ceil(math.sqrt(distance / (ACCEL * DT**2)))
        a = distance / (ACCEL * DT**2 * n**2)
        actions += [a] * n + [-a] * n
    return actions


def optimal_return(start: torch.Tensor) -> torch.Tensor:
    """Optimal safe (undiscounted) return from each start state ``(..., 2)``: ``(X_H - x_0) / dt``."""
    return (X_HAZARD - start[..., 0]) / DT


def simulate(policy, start: torch.Tensor, gamma: float = 0.99) -> dict[str, torch.Tensor]:
    """Roll a deterministic policy from each start state for one episode (:func:`base.simulate`)."""
    return base.simulate(StatewiseBrakingEnv, policy, start, gamma)


class StatewiseBrakingEnv(VectorTask):
    """OmniSafe CMDP of the braking task (vectorised; see module doc)."""

    _support_envs: ClassVar[list[str]] = [ENV_ID]
    horizon: ClassVar[int] = HORIZON
    obs_low: ClassVar[list[float]] = [X_WALLS[0], -V_MAX]
    start_low: ClassVar[list[float]] = [X0_RANGE[0], V0_RANGE[0]]
    start_high: ClassVar[list[float]] = [X0_RANGE[1], V0_RANGE[1]]
    obs_high: ClassVar[list[float]] = [X_WALLS[1], V_MAX]

    def _transition(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x, v = state[:, 0], state[:, 1]
        x_next, v_next = step_dynamics(x, v, action[:, 0])
        reward = (x_next - x) / DT
        cost = (x_next > X_HAZARD).float()
        terminated = torch.zeros_like(cost, dtype=torch.bool)
        return torch.stack([x_next, v_next], dim=-1), reward, cost, terminated
