"""Score a trained run on a multi-step known-answer task against its exact answers.

For ``StatewiseBraking-v0`` and ``StatewiseDetour-v0`` (see their modules and
docs/known_answer.md):

- the deterministic policy is rolled out from a fixed grid of start states: its return against
  the exact optimal safe return, and the number of start states whose realised discounted cost
  exceeds ``d`` (violating start states);
- ``F_hat(x) <= d`` (SAC-FPI: its CDF ``G(x) <= p_f``) is compared with the exact feasible set
  on a fixed state grid (accuracy,
  and the two error rates);
- the multiplier on that grid: its mean near the boundary (feasible states within ``NEAR`` of
  it), deep inside the feasible set (margin at least ``DEEP``) and on infeasible states;
- ``F_hat`` against the saved policy's own feasibility function, estimated by Monte Carlo
  (:func:`monte_carlo_f`): this separates a critic that misjudges its policy (``critic_bias``)
  from a policy that is unsafe where the exact answer says it need not be (``mc_accuracy``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from omnisafe_alam.envs import TASKS, braking, detour
from omnisafe_alam.core.functional import average_ranks
from omnisafe_alam.tools.runs import LoadedRun, load_run

__all__ = ['TASK_SPECS', 'TaskSpec', 'evaluate_loaded', 'evaluate_run', 'monte_carlo_f', 'score_classification']

#: margin bands of the multiplier comparison (in the task's margin units: metres of slack)
NEAR = 0.1
DEEP = 0.3


@dataclass(frozen=True)
class TaskSpec:
    """What scoring needs to know of a task."""

    start_states: torch.Tensor
    state_grid: torch.Tensor
    margin: Callable[[torch.Tensor], torch.Tensor]
    optimal_return: Callable[[torch.Tensor], torch.Tensor]
    simulate: Callable[..., dict[str, torch.Tensor]]


def _grid(xs: torch.Tensor, ys: torch.Tensor) -> torch.Tensor:
    return torch.cartesian_prod(xs, ys)


TASK_SPECS: dict[str, TaskSpec] = {
    braking.ENV_ID: TaskSpec(
        start_states=_grid(torch.linspace(*braking.X0_RANGE, 9), torch.linspace(*braking.V0_RANGE, 6)),
        state_grid=_grid(torch.linspace(*braking.GRID_X, 41), torch.linspace(*braking.GRID_V, 41)),
        margin=braking.feasibility_margin,
        optimal_return=braking.optimal_return,
        simulate=braking.simulate,
    ),
    detour.ENV_ID: TaskSpec(
        # x offsets of 0.025 keep every position x_0 + t dt 0.025 away from the box's edges
        start_states=_grid(torch.arange(0.025, detour.X0_RANGE[1], 0.05), torch.linspace(*detour.Y0_RANGE, 9)),
        state_grid=_grid(torch.arange(detour.GRID_X[0] + 0.025, detour.GRID_X[1], 0.05), torch.linspace(*detour.GRID_Y, 41)),
        margin=detour.feasibility_margin,
        optimal_return=detour.optimal_return,
        simulate=detour.simulate,
    ),
}


def score_classification(f_hat: torch.Tensor, feasible: torch.Tensor, d: float) -> dict[str, float]:
    """How well ``F_hat <= d`` classifies the exact feasible set.

    Returns ``accuracy`` (share of grid states classified right), ``false_unsafe`` (share of the
    feasible states called infeasible), ``false_safe`` (share of the infeasible states called
    feasible; NaN when there are none) and ``auc``: the probability that a random infeasible
    state has a higher ``F_hat`` than a random feasible one (ties count half), which scores the
    ordering of the risk signal whatever its offset.
    """
    predicted = f_hat <= d
    infeasible = ~feasible
    ranks = average_ranks(f_hat.double())
    n_pos, n_neg = int(infeasible.sum()), int(feasible.sum())
    auc = (
        float((ranks[infeasible].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
        if n_pos and n_neg
        else float('nan')
    )
    return {
        'auc': auc,
        'accuracy': float((predicted == feasible).float().mean()),
        'false_unsafe': float((~predicted & feasible).float().sum() / feasible.sum().clamp(min=1)),
        'false_safe': float((predicted & infeasible).float().sum() / infeasible.sum())
        if infeasible.any()
        else float('nan'),
    }


def monte_carlo_f(
    task: Any,
    policy: Callable[[torch.Tensor], torch.Tensor],
    states: torch.Tensor,
    gamma: float,
    samples: int = 1,
    horizon: int = 400,
    kind: str = 'discounted_cost',
) -> torch.Tensor:
    r"""The policy's feasibility function :math:`F^\pi(x) = E[\sum_t \gamma^t c_t]` at ``states``.

    Rolls ``samples`` copies of every state forward for ``horizon`` steps through the task's
    dynamics, *without* its time limit (the critics bootstrap through it, so this is the value
    they learn), stopping only where the task terminates; the mean discounted cost per state.
    ``policy`` maps observations to actions (stochastic or not: ``samples`` > 1 only helps for a
    stochastic one). The rollout keeps the dtype of ``states``. The truncation error is at most
    ``gamma**horizon / (1 - gamma)`` times the largest step cost (1.8 at 0.99 and 400 steps only if every later step cost; on the shipped
    tasks the policies park or leave, and later costs are rare).

    ``kind='first_cost_decay'`` estimates SAC-FPI's constraint decay function instead:
    ``E[gamma^T]`` with ``T`` the first step with cost (0 where no cost comes).
    """
    if kind not in ('discounted_cost', 'first_cost_decay'):
        raise ValueError(f"kind must be 'discounted_cost' or 'first_cost_decay', got {kind!r}")
    env = task(task._support_envs[0], num_envs=1)
    state = states.repeat(samples, 1)
    disc = torch.zeros(len(state), dtype=state.dtype)
    alive = torch.ones(len(state), dtype=torch.bool)
    for t in range(horizon):
        with torch.no_grad():
            act = policy(state).reshape(len(state), -1).clamp(-1.0, 1.0)
        next_state, _, cost, terminated = env._transition(state, act)
        if kind == 'first_cost_decay':
            hit = (cost > 0) & alive
            disc += gamma**t * hit.to(disc.dtype)
            alive &= ~hit
        else:
            disc += gamma**t * cost * alive
        state = torch.where(alive.unsqueeze(-1), next_state, state)
        alive &= ~terminated
        if not alive.any():
            break
    return disc.reshape(samples, len(states)).mean(0)


def evaluate_loaded(run: LoadedRun, k: int = 64, seed: int = 0, mc_samples: int = 16) -> dict[str, Any]:
    """Score a loaded run (see module doc); keys are flat so rows stack into a table.

    ``F_hat`` samples ``k`` actions per state from the policy, the Monte-Carlo ``F^pi``
    ``mc_samples`` stochastic rollouts per state, both with torch's RNG seeded by ``seed`` (the
    caller's RNG state is left as it was), so a score is reproducible. ``mc_accuracy`` is the
    accuracy of ``F^pi <= d`` (the stochastic policy's own feasibility) against the exact
    feasible set, ``critic_bias`` the mean of ``F_hat - F^pi`` over the feasible grid states.
    For SAC-FPI both use its CDF (``G`` and the Monte-Carlo ``E[gamma^T]``) and its ``p_f``; for
    ALGD its pessimistic ensemble value ``Qbar_c`` and its cost target ``h``.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _evaluate(run, k, mc_samples)


def _evaluate(run: LoadedRun, k: int, mc_samples: int) -> dict[str, Any]:
    if run.env_id not in TASK_SPECS:
        raise ValueError(f'{run.env_id} is not a multi-step known-answer task: {sorted(TASK_SPECS)}')
    spec = TASK_SPECS[run.env_id]
    d = float(run.cfgs.get('alam_cfgs', {}).get('d', 0.1))
    threshold = run.risk_threshold
    gamma = float(run.cfgs['algo_cfgs']['gamma'])
    cost_gamma = float(run.cfgs.get('alam_cfgs', {}).get('cost_gamma', 0.0))
    if cost_gamma not in (0.0, gamma):
        # the tasks' exact feasible sets (spec.margin) are F* <= d at the reward's discount
        raise ValueError(
            f'{run.env_id} knows its exact feasible set for F at algo_cfgs.gamma={gamma} only; '
            f'this run has alam_cfgs.cost_gamma={cost_gamma}',
        )

    def policy(obs: torch.Tensor) -> torch.Tensor:
        return run.actor.predict(run.normalize(obs), deterministic=True)

    rollout = spec.simulate(policy, spec.start_states, gamma)
    best = spec.optimal_return(spec.start_states)
    row: dict[str, Any] = {
        'algo': run.algo,
        'seed': run.cfgs['seed'],
        'return': float(rollout['return'].mean()),
        'optimal_return': float(best.mean()),
        'return_ratio': float(rollout['return'].mean() / best.mean()),
        'violating_starts': int((rollout['discounted_cost'] > d).sum()),
        'num_starts': len(spec.start_states),
    }
    grid = spec.state_grid
    margin = spec.margin(grid)
    feasible = margin >= 0
    if run.cost_critic is not None or run.feasibility_critic is not None or run.cost_ensemble is not None:
        # F_hat <= d, or SAC-FPI's own region test G <= p_f, or ALGD's Qbar_c <= h
        f_hat = run.risk(run.normalize(grid), k=k)
        row.update(score_classification(f_hat, feasible, threshold))
        row['f_hat_deep'] = float(f_hat[margin >= DEEP].mean())
        row['f_hat_infeasible'] = float(f_hat[~feasible].mean())

        def stochastic(obs: torch.Tensor) -> torch.Tensor:
            return run.actor.predict(run.normalize(obs), deterministic=False)

        f_mc = monte_carlo_f(TASKS[run.env_id], stochastic, grid, gamma, samples=mc_samples, kind=run.risk_kind)
        row['mc_accuracy'] = score_classification(f_mc, feasible, threshold)['accuracy']
        row['critic_bias'] = float((f_hat - f_mc)[feasible].mean())
    if run.multiplier is not None:
        with torch.no_grad():
            lam = run.multiplier(run.normalize(grid))
        row['lam_near'] = float(lam[feasible & (margin < NEAR)].mean())
        row['lam_deep'] = float(lam[margin >= DEEP].mean())
        row['lam_infeasible'] = float(lam[~feasible].mean())
        row['lam_max'] = float(lam.max())
        row['lam_finite'] = bool(torch.isfinite(lam).all())
    return row


def evaluate_run(run_dir: str | Path, checkpoint: str | None = None) -> dict[str, Any]:
    """Load a run directory and score it (see :func:`evaluate_loaded`)."""
    return evaluate_loaded(load_run(run_dir, checkpoint))
