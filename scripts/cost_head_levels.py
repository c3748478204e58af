"""Where does a softplus cost critic sit, and is its floor doing anything?

For a plugin run on a multi-step known-answer task (``examples/known_answer.py`` runs), prints

1. for every full checkpoint (``state/step-N.pt``): the quantiles of the cost critics'
   pre-softplus output ``z`` (the lower twin) over the replay buffer and the fraction of stored
   transitions where either twin is below the floor's logit (``alam_cfgs.cost_critic_floor``):
   where that fraction is 0, the floor's penalty is exactly 0 at that point of training;
2. at the final policy, by distance to the exact feasible set's boundary (margin bands): the
   mean ``F_hat``, the stochastic policy's Monte-Carlo ``F^pi``, the mean ``z``, and the share of
   states with ``F_hat <= d``; then the accuracy of ``F_hat <= t`` on the exact feasible set for
   ``t`` = ``d``, ``2 d`` and ``3 d``;
3. deep inside the feasible set, the critics against their own regression target one step on
   (zero cost there): where they agree, the level is a fixed point of the cost backup, which
   shrinks an offset only by ``gamma`` per backup.

    .venv/bin/python scripts/cost_head_levels.py RUN_DIR [RUN_DIR ...]

docs/algorithms.md ("A floor under the softplus head") quotes it on the Braking runs.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from omnisafe_alam.core import functional as F
from omnisafe_alam.glue.checkpoint import load_state_file
from omnisafe_alam.tools.known_answer import DEEP, NEAR, TASK_SPECS, TASKS, monte_carlo_f, score_classification
from omnisafe_alam.core.models import build_cost_critic
from omnisafe_alam.tools.runs import load_run


def buffer_levels(run, state_path: Path, z_min: float) -> str:
    """Quantiles of the lower twin's ``z`` over a checkpoint's replay buffer, and the floor's reach."""
    state = load_state_file(state_path)
    prefix = 'cost_critic.'
    params = {k[len(prefix) :]: v for k, v in state['modules']['_actor_critic'].items() if k.startswith(prefix)}
    data, size = state['buffer']['data'], int(state['buffer']['size'])
    obs, act = data['obs'][:size], data['act'][:size]
    model = run.cfgs['model_cfgs']
    net = build_cost_critic(
        spaces.Box(-np.inf, np.inf, (int(obs.shape[-1]),)),
        spaces.Box(-1.0, 1.0, (int(act.shape[-1]),)),
        model['critic']['hidden_sizes'],
        model['critic']['activation'],
        model['weight_initialization_mode'],
        'softplus',
    )
    net.load_state_dict(params)
    with torch.no_grad():
        z = torch.stack(net.pre_activations(obs, act))
    low = z.min(0).values
    q = [float(low.quantile(p)) for p in (0.01, 0.1, 0.5)]
    below = float((z < z_min).any(0).float().mean())
    return f'{state_path.name}: {size} transitions, z q01/q10/q50 {q[0]:.2f}/{q[1]:.2f}/{q[2]:.2f}, below the floor {below:.4f}'


def report(run_dir: Path, k: int = 64, mc_samples: int = 16) -> None:
    run = load_run(run_dir)
    if run.cost_critic is None or run.env_id not in TASK_SPECS:
        raise SystemExit(f'{run_dir}: needs a run with cost critics on one of {sorted(TASK_SPECS)}')
    spec = TASK_SPECS[run.env_id]
    alam = run.cfgs['alam_cfgs']
    d, gamma = float(alam['d']), float(run.cfgs['algo_cfgs']['gamma'])
    floor = float(alam.get('cost_critic_floor', 0.0))
    z_min = F.logit_floor(floor * d)
    print(f'{run_dir}\n  {run.algo} on {run.env_id}, floor {floor} d (z_min {z_min:.2f}), d {d}')
    for path in sorted((run_dir / 'state').glob('step-*.pt'), key=lambda p: int(p.stem.split('-')[1])):
        print('  ' + buffer_levels(run, path, z_min))

    grid = spec.state_grid
    margin = spec.margin(grid)
    obs = run.normalize(grid)
    torch.manual_seed(0)
    with torch.no_grad():
        actions = run.actor(obs).sample((k,))
        z = torch.stack(run.cost_critic.pre_activations(obs.expand(k, *obs.shape), actions)).min(0).values.mean(0)
        f_hat = run.f_hat(obs, k=k)

    def stochastic(o: torch.Tensor) -> torch.Tensor:
        return run.actor.predict(run.normalize(o), deterministic=False)

    f_mc = monte_carlo_f(TASKS[run.env_id], stochastic, grid, gamma, samples=mc_samples)
    bands = [
        ('infeasible', margin < 0),
        (f'margin < {NEAR}', (margin >= 0) & (margin < NEAR)),
        (f'{NEAR} to {DEEP}', (margin >= NEAR) & (margin < DEEP)),
        (f'>= {DEEP} (deep)', margin >= DEEP),
    ]
    print(f'  {"band":16s} {"states":>6s} {"F_hat":>7s} {"F^pi":>7s} {"z":>7s} {"F_hat<=d":>8s}')
    for name, mask in bands:
        print(
            f'  {name:16s} {int(mask.sum()):6d} {float(f_hat[mask].mean()):7.3f} {float(f_mc[mask].mean()):7.3f}'
            f' {float(z[mask].mean()):7.2f} {float((f_hat[mask] <= d).float().mean()):8.3f}',
        )

    scores = [f'{t:.1f} {score_classification(f_hat, margin >= 0, t)["accuracy"]:.3f}' for t in (d, 2 * d, 3 * d)]
    print('  accuracy of F_hat <= threshold: ' + ', '.join(scores))

    # the backup deep inside: Q(x, a) against c + gamma * mean_i Q_i(x', a'), a' from the policy
    deep = margin >= DEEP
    env = TASKS[run.env_id](TASKS[run.env_id]._support_envs[0], num_envs=1)
    with torch.no_grad():
        x = grid[deep].expand(k, -1, -1).reshape(-1, grid.shape[-1])
        a = run.actor(run.normalize(x)).sample()
        q = torch.stack(run.cost_critic(run.normalize(x), a)).mean(0)
        x_next, _, cost, terminated = env._transition(x, a.clamp(-1.0, 1.0))
        a_next = run.actor(run.normalize(x_next)).sample()
        q_next = torch.stack(run.cost_critic(run.normalize(x_next), a_next)).mean(0)
        target = cost + gamma * (1.0 - terminated.float()) * q_next
    print(
        f'  deep: Q_c {float(q.mean()):.4f}, its target {float(target.mean()):.4f}, step cost {float(cost.mean()):.4f}'
        f' (the backup alone takes off {(1 - gamma) * float(q.mean()):.4f} per step of it)',
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('run_dirs', nargs='+', type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for run_dir in args.run_dirs:
        report(run_dir)


if __name__ == '__main__':
    main()
