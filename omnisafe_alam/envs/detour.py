"""``StatewiseDetour-v0``: a 2-D hazard in the way that must be gone around.

A point moves forward at a constant speed (``x' = x + dt``, ``dt = 0.1``) and the action ``a`` in
``[-1, 1]`` is its lateral velocity: ``y' = clip(y + a dt, -1, 1)``; the observation is ``(x, y)``.
The hazard is the box ``x in [X_IN, X_OUT]``, ``Y_LOW < y < Y_HIGH``, reaching past the lateral
wall (so it is gone around above): the step costs
``c = 1[(x', y') in box]``. The reward ``1 - 2|y'|`` pays for keeping to the centre line ``y = 0``,
which runs through the box, so the unconstrained optimum violates from every start state. The
episode ends (terminated) once ``x' >= X_END``: there is nothing to violate past the box.

Known answers (docs/known_answer.md):

- **Feasible set.** Let ``k`` be the number of steps until the point is first at ``x >= X_IN``
  (``k = 1`` inside the box's x-range). A state escapes over the box iff ``y + k dt >= Y_HIGH``
  (under it iff ``y - k dt <= Y_LOW``, impossible with the wall); a state past ``X_OUT - dt``
  always escapes. Otherwise
  the cost arrives within ``k + 10`` steps, so ``F* >= gamma^21 > d`` for any ``d < 0.8``.
- **Optimal safe return** from a start ``(x_0, y_0)``: the constraints act on each ``|y_t|``
  separately and ``|y_{t+1} - y_t| <= dt``, so on the upper side the pointwise smallest ``|y_t|``
  is ``max(L_t, clip(0, y_0 - t dt, y_0 + t dt))`` with ``L_t`` the slope-``dt`` envelope that is
  ``Y_HIGH`` on the box's steps; that path is itself dynamically feasible, hence optimal for any
  positive weighting of the steps (discounted or not). The lower side likewise; the better side
  wins (:func:`optimal_path`).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch

from omnisafe_alam.envs import base
from omnisafe_alam.envs.base import VectorTask

__all__ = [
    'ENV_ID',
    'StatewiseDetourEnv',
    'feasibility_margin',
    'optimal_path',
    'optimal_return',
    'simulate',
]

ENV_ID = 'StatewiseDetour-v0'
DT = 0.1
X_IN, X_OUT = 1.0, 2.0
#: the box reaches below the lateral wall (y >= -1), so it can only be gone around above: then
#: the feasible set of the best policy is also that of every sensible one (no unvisited escape
#: route below that the learned policy, trained from starts above, would never take)
Y_LOW, Y_HIGH = -2.0, 0.1
X_END = 3.0
Y_LIMIT = 1.0
#: start states: x_0 ~ U[X0_RANGE], y_0 ~ U[Y0_RANGE] (all feasible: tested)
X0_RANGE = (0.0, 0.3)
Y0_RANGE = (-0.5, 0.3)
#: the state grid on which F_hat's classification of the feasible set is scored
GRID_X = (0.5, 1.9)
GRID_Y = (-0.6, 0.4)
HORIZON = math.ceil((X_END - X0_RANGE[0]) / DT) + 1


def in_box(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Whether positions are inside the hazard box."""
    return (x >= X_IN) & (x <= X_OUT) & (y > Y_LOW) & (y < Y_HIGH)


def _steps_to_box(x: torch.Tensor) -> torch.Tensor:
    """``k``: steps until ``x + k dt >= X_IN`` (at least 1), float64."""
    return torch.clamp(torch.ceil((X_IN - x.double()) / DT - 1e-9), min=1.0)


def feasibility_margin(state: torch.Tensor) -> torch.Tensor:
    """How far the state is inside the feasible set (``>= 0`` iff feasible), shape ``(...)``.

    The larger of the two escape slacks ``y + k dt - Y_HIGH`` and ``Y_LOW - (y - k dt)``; states
    whose next position is already past the box get ``+inf``.
    """
    x, y = state[..., 0].double(), state[..., 1].double()
    k = _steps_to_box(x)
    slack = torch.maximum(y + k * DT - Y_HIGH, Y_LOW - (y - k * DT))
    past = x + DT > X_OUT
    return torch.where(past, torch.full_like(slack, math.inf), slack).float()


def optimal_path(start: torch.Tensor) -> torch.Tensor:
    """Pointwise-optimal safe lateral positions ``y_1..y_N`` from each start, ``(N_steps, B)``.

    ``N_steps`` covers the longest episode over the batch; steps after a start's episode has
    ended are NaN.
    """
    x0, y0 = start[..., 0].double(), start[..., 1].double()
    steps = math.ceil((X_END - float(x0.min())) / DT) + 1
    t = torch.arange(1, steps + 1, dtype=torch.float64).unsqueeze(-1)
    x_t = x0 + t * DT
    # slope-dt envelope around the box's steps t_in..t_out: |y_t| >= Y_HIGH - gap_t dt (upper side)
    t_in = torch.ceil((X_IN - x0) / DT - 1e-9)
    t_out = torch.floor((X_OUT - x0) / DT + 1e-9)
    gap = torch.maximum(torch.maximum(t_in - t, t - t_out), torch.zeros_like(x_t))
    free = torch.clamp(torch.zeros_like(x_t), y0 - t * DT, y0 + t * DT)
    upper = torch.maximum(Y_HIGH - gap * DT, free)
    lower = torch.minimum(Y_LOW + gap * DT, free)
    alive = (x0 + (t - 1) * DT) < X_END - 1e-9
    value_up = torch.where(alive, 1 - 2 * upper.abs(), torch.zeros_like(upper)).sum(dim=0)
    value_low = torch.where(alive, 1 - 2 * lower.abs(), torch.zeros_like(lower)).sum(dim=0)
    path = torch.where(value_up >= value_low, upper, lower)
    return torch.where(alive, path, torch.full_like(path, math.nan))


def optimal_return(start: torch.Tensor) -> torch.Tensor:
    """Optimal safe (undiscounted) return from each start state ``(B, 2)``."""
    path = optimal_path(start)
    return torch.nan_to_num(1 - 2 * path.abs(), nan=0.0).sum(dim=0).float()


def simulate(policy, start: torch.Tensor, gamma: float = 0.99) -> dict[str, torch.Tensor]:
    """Roll a deterministic policy from each start state for one episode (:func:`base.simulate`)."""
    return base.simulate(StatewiseDetourEnv, policy, start, gamma)


class StatewiseDetourEnv(VectorTask):
    """OmniSafe CMDP of the detour task (vectorised; see module doc)."""

    _support_envs: ClassVar[list[str]] = [ENV_ID]
    horizon: ClassVar[int] = HORIZON
    obs_low: ClassVar[list[float]] = [X0_RANGE[0], -Y_LIMIT]
    start_low: ClassVar[list[float]] = [X0_RANGE[0], Y0_RANGE[0]]
    start_high: ClassVar[list[float]] = [X0_RANGE[1], Y0_RANGE[1]]
    obs_high: ClassVar[list[float]] = [X_END + DT, Y_LIMIT]

    def _transition(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x_next = state[:, 0] + DT
        y_next = torch.clamp(state[:, 1] + action[:, 0] * DT, -Y_LIMIT, Y_LIMIT)
        reward = 1.0 - 2.0 * y_next.abs()
        cost = in_box(x_next, y_next).float()
        terminated = x_next >= X_END - 1e-6
        return torch.stack([x_next, y_next], dim=-1), reward, cost, terminated
