"""Known-answer experiments: optimality, violations, F_hat and the multiplier against exact answers.

Trains each algorithm for each seed through `omnisafe train` (two runs at a time) with the
YAML's task section, then scores the final policy (docs/known_answer.md):

- StatewiseLimit-v0: the deterministic policy from 201 start states against the closed form;
- StatewiseBraking-v0, StatewiseDetour-v0: deterministic rollouts from a grid of start states
  against the exact optimal safe return, F_hat <= d against the exact feasible set on a state
  grid, and the multiplier near the boundary vs deep inside the feasible set
  (omnisafe_alam.tools.known_answer).

    .venv/bin/python examples/known_answer.py --env-id StatewiseBraking-v0 --seeds 0 1 2 \
        --algos SACALaM SACLagNet SACALaMGA SACFPI SAC ALGD SACALaM+diffusion

SAC-FPI is scored with its own feasibility function and threshold (``G <= p_f``), ALGD with
its own (``Qbar_c <= h``); ``ALGO+diffusion`` is the plugin algorithm with ALGD's diffusion
actor (``model_cfgs.actor_type: diffusion``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
import yaml

import omnisafe_alam  # noqa: F401
from omnisafe_alam.envs import TASKS
from omnisafe_alam.envs.limit import ENV_ID as LIMIT_ENV_ID
from omnisafe_alam.envs.limit import SAC_BASELINE_CFGS, evaluate_policy, optimal_multiplier
from omnisafe_alam.tools.known_answer import evaluate_run
from omnisafe_alam.glue.registration import load_defaults
from omnisafe_alam.tools.runs import load_run, markdown_table, stability_metrics



def sac_baseline_cfgs(env_id: str) -> dict:
    """Settings giving OmniSafe's SAC (which has no section for our tasks) the plugin's task section."""
    if env_id == LIMIT_ENV_ID:  # SAC_BASELINE_CFGS holds `--custom-cfgs` pairs
        cfgs: dict = {}
        for key, value in SAC_BASELINE_CFGS.items():
            group, *path, leaf = key.split(':')
            node = cfgs.setdefault(group, {})
            for part in path:
                node = node.setdefault(part, {})
            node[leaf] = value == 'True' if value in ('True', 'False') else float(value) if '.' in value else int(value)
        return cfgs
    section = load_defaults('SACALaM', env_id)
    return {
        'algo_cfgs': {
            'steps_per_epoch': section.algo_cfgs.steps_per_epoch,
            'start_learning_steps': section.algo_cfgs.start_learning_steps,
            'auto_alpha': True,
        },
        'model_cfgs': {
            'actor': {
                'hidden_sizes': list(section.model_cfgs.actor.hidden_sizes),
                'lr': section.model_cfgs.actor.lr,
            },
            'critic': {
                'hidden_sizes': list(section.model_cfgs.critic.hidden_sizes),
                'lr': section.model_cfgs.critic.lr,
            },
        },
    }


_AGENT = 'import json, sys, omnisafe; omnisafe.Agent(sys.argv[1], sys.argv[2], custom_cfgs=json.loads(sys.argv[3])).learn()'


def train(
    algo: str, seed: int, env_id: str, steps: int | None, log_dir: Path, reuse: bool = False, reward_scale: float = 1.0,
    alam: dict | None = None,
) -> Path:
    """Train one run through ``omnisafe.Agent`` in a fresh interpreter (as a user script would)."""
    out_dir = log_dir / f'{algo}-s{seed}'
    # ALGO+diffusion: the plugin algorithm with ALGD's diffusion actor (model_cfgs.actor_type)
    algo, _, actor_type = algo.partition('+')
    existing = list(out_dir.glob('*/seed-*'))
    if reuse and existing:
        return existing[0]
    if steps is None:
        steps = int(load_defaults('SACALaM', env_id).train_cfgs.total_steps)
    cfgs = sac_baseline_cfgs(env_id) if algo == 'SAC' else {}
    cfgs['seed'] = seed
    cfgs['train_cfgs'] = {'total_steps': steps, 'torch_threads': 1}
    cfgs['logger_cfgs'] = {'log_dir': str(out_dir), 'use_tensorboard': False}
    if reward_scale != 1.0:  # the plugin's task sections have env_cfgs (OmniSafe's SAC has none)
        cfgs['env_cfgs'] = {'reward_scale': reward_scale}
    if alam and algo != 'SAC':
        cfgs['alam_cfgs'] = dict(alam)
    if actor_type:
        cfgs['model_cfgs'] = {'actor_type': actor_type}
    out = subprocess.run(
        [sys.executable, '-c', _AGENT, algo, env_id, json.dumps(cfgs)],
        capture_output=True, text=True, check=False,
    )
    if out.returncode:
        raise RuntimeError(f'{algo} seed {seed} failed:\n{out.stderr[-3000:]}')
    (run,) = out_dir.glob('*/seed-*')
    return run


def summarize(run: Path, d: float) -> dict:
    loaded = load_run(run)
    label = loaded.algo
    if loaded.cfgs['model_cfgs']['actor_type'] == 'diffusion' and loaded.algo != 'ALGD':
        label += '+diffusion'
    if loaded.env_id != LIMIT_ENV_ID:
        row = evaluate_run(run)
        row.update(stability_metrics(pd.read_csv(run / 'progress.csv')))
        row['algo'] = label
        return row
    row = {'algo': label, 'seed': loaded.cfgs['seed']}
    row.update(evaluate_policy(lambda o: loaded.actor.predict(o, deterministic=True), d))
    if loaded.multiplier is not None:
        import torch

        x = torch.linspace(-1.0, 1.0, 201)
        with torch.no_grad():
            lam = loaded.multiplier(x.unsqueeze(-1))
        active = optimal_multiplier(x, d).bool()
        row['lam_active'] = float(lam[active].mean())
        row['lam_inactive'] = float(lam[~active].mean())
    row.update(stability_metrics(pd.read_csv(run / 'progress.csv')))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--algos', nargs='+', default=['SACALaM', 'SACLagNet', 'SAC'])
    parser.add_argument('--seeds', nargs='+', type=int, default=[0, 1, 2])
    parser.add_argument('--env-id', default=LIMIT_ENV_ID, choices=sorted(TASKS))
    parser.add_argument('--steps', type=int, default=None, help="default: the YAML task section's budget")
    parser.add_argument('--d', type=float, default=0.1)
    parser.add_argument('--log-dir', type=Path, default=None, help='default: runs/known_answer/ENV_ID')
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--reward-scale', type=float, default=1.0, help='every reward times this (env_cfgs.reward_scale)')
    parser.add_argument('--reuse', action='store_true', help='summarise existing runs, train only missing ones')
    parser.add_argument('--alam', nargs='*', default=[], metavar='KEY=VALUE',
                        help='alam_cfgs overrides for the plugin algorithms, e.g. cost_critic_min_slope=0.1')
    args = parser.parse_args()
    alam = {}
    for item in args.alam:
        key, sep, value = item.partition('=')
        if not sep:
            parser.error(f'--alam takes KEY=VALUE, got {item!r}')
        alam[key] = yaml.safe_load(value)
    args.log_dir = args.log_dir or Path('runs/known_answer') / args.env_id
    jobs = [(a, s) for a in args.algos for s in args.seeds]
    with ThreadPoolExecutor(args.workers) as pool:
        runs = list(pool.map(lambda job: train(*job, args.env_id, args.steps, args.log_dir, args.reuse, args.reward_scale, alam), jobs))
    table = pd.DataFrame([summarize(run, args.d) for run in runs])
    print(markdown_table(table))
    (args.log_dir / 'summary.json').write_text(table.to_json(orient='records', indent=2))


if __name__ == '__main__':
    main()
