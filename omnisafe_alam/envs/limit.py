"""``StatewiseLimit-v0``: a state-wise constrained task whose optimum is known in closed form.

Each episode is one decision. The state is a context ``x ~ U[-1, 1]``; the action ``a`` in
``[-1, 1]`` earns ``r = 1 + a`` and costs ``c = max(0, a - s(x))`` with the state's safe level
``s(x) = x + SHIFT``. The state-wise constraint ``F(x) = c(x, pi(x)) <= d`` allows the action to
exceed the safe level by at most ``d``. Larger actions always pay more, so the unconstrained
optimum ``a = 1`` violates wherever ``s(x) + d < 1`` (75% of states at ``d = 0.1``): the
constraint binds. The derivation of :func:`optimal_action`, :func:`optimal_return` and
:func:`optimal_multiplier` is in ``docs/known_answer.md``.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from omnisafe_alam.envs.base import VectorTask

__all__ = [
    'ENV_ID',
    'SAC_BASELINE_CFGS',
    'SHIFT',
    'StatewiseLimitEnv',
    'evaluate_policy',
    'optimal_action',
    'optimal_multiplier',
    'optimal_return',
    'safe_level',
]

ENV_ID = 'StatewiseLimit-v0'
#: `--custom-cfgs` pairs giving OmniSafe's own SAC (which has no section for this task) the
#: settings of the plugin's StatewiseLimit-v0 section, for an unconstrained reference run
SAC_BASELINE_CFGS = {
    'algo_cfgs:steps_per_epoch': '500',
    'algo_cfgs:start_learning_steps': '500',
    'algo_cfgs:batch_size': '128',
    'algo_cfgs:auto_alpha': 'True',
    'model_cfgs:actor:lr': '0.001',
    'model_cfgs:critic:lr': '0.001',
}
#: s(x) = x + SHIFT
SHIFT = 0.4


def safe_level(x: torch.Tensor) -> torch.Tensor:
    """The action level ``s(x)`` above which the task costs."""
    return x + SHIFT


def optimal_action(x: torch.Tensor, d: float) -> torch.Tensor:
    """The optimal safe policy: ``a*(x) = min(1, s(x) + d)``."""
    return torch.clamp(safe_level(x) + d, max=1.0)


def optimal_return(d: float) -> float:
    r"""Expected return of :func:`optimal_action` for ``x ~ U[-1, 1]``.

    With :math:`k = \mathrm{SHIFT} + d` and the threshold :math:`x^* = 1 - k`,

    .. math::

        \mathbb E[1 + a^*(x)] = 1 + \frac{1}{2}\left[\int_{-1}^{x^*} (x + k)\,dx + (1 - x^*)\right]
                              = 1 + \frac{1}{2}\left[\frac{1 - (k - 1)^2}{2} + k\right].

    Valid for ``0 <= k <= 2`` (at ``d = 0.1``: 1.4375).
    """
    k = SHIFT + d
    if not 0.0 <= k <= 2.0:
        raise ValueError(f'SHIFT + d = {k} outside [0, 2]')
    return 1.0 + 0.5 * ((1.0 - (k - 1.0) ** 2) / 2.0 + k)


def optimal_multiplier(x: torch.Tensor, d: float) -> torch.Tensor:
    """Optimal state-wise multiplier: 1 where the constraint is active (``s(x) + d < 1``), else 0.

    Stationarity of ``r - lambda (c - d)`` in ``a`` on the active side: ``1 - lambda = 0``.
    """
    return (safe_level(x) + d < 1.0).float()


def evaluate_policy(
    policy: Callable[[torch.Tensor], torch.Tensor],
    d: float,
    num_states: int = 201,
    tolerance: float = 0.01,
) -> dict[str, float]:
    """Evaluate a deterministic policy from ``num_states`` evenly spaced start states.

    Args:
        policy: maps observations ``(N, 1)`` to actions ``(N, 1)`` in ``[-1, 1]``.
        d: the tolerance of the state-wise constraint.
        num_states: grid size over ``[-1, 1]`` (the grid mean approximates ``E_{x~U}``).
        tolerance: a start state counts as violating when ``c > d + tolerance``.

    Returns:
        ``return`` (mean over the grid), ``optimal_return`` (the grid mean of the optimum),
        ``return_ratio``, ``violations`` (number of violating start states), ``max_excess``
        (largest ``c - d``) and ``num_states``.
    """
    x = torch.linspace(-1.0, 1.0, num_states)
    with torch.no_grad():
        act = policy(x.unsqueeze(-1)).reshape(-1).clamp(-1.0, 1.0)
    cost = torch.clamp(act - safe_level(x), min=0.0)
    ret = float((1.0 + act).mean())
    best = float((1.0 + optimal_action(x, d)).mean())
    return {
        'return': ret,
        'optimal_return': best,
        'return_ratio': ret / best,
        'violations': int((cost > d + tolerance).sum()),
        'max_excess': float((cost - d).max()),
        'num_states': num_states,
    }


class StatewiseLimitEnv(VectorTask):
    """OmniSafe CMDP of the known-answer task (vectorised; see module doc).

    ``reset(options={'x': value})`` starts from a chosen state (one value, or one per env).
    Every step ends the episode (terminated), and the env draws the next context itself.
    """

    _support_envs: ClassVar[list[str]] = [ENV_ID]
    horizon: ClassVar[int] = 1

    def reset(
        self,
        seed: int | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[torch.Tensor, dict[str, Any]]:
        if options is not None and 'x' in options:
            options = {'state': torch.as_tensor(options['x'], dtype=torch.float32).reshape(-1, 1)}
        return super().reset(seed=seed, options=options)

    def _transition(
        self,
        state: torch.Tensor,
        action: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x, act = state[:, 0], action[:, 0]
        reward = 1.0 + act
        cost = torch.clamp(act - safe_level(x), min=0.0)
        terminated = torch.ones_like(cost, dtype=torch.bool)
        return state, reward, cost, terminated
