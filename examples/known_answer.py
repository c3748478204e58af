"""Known-answer experiment on StatewiseLimit-v0: optimality, violations and stability by seed.

Trains each algorithm for each seed through `omnisafe train` (two runs at a time), then
evaluates the final deterministic policy from 201 start states against the closed-form optimum
(docs/known_answer.md) and computes the stability figures of the second half of training.

    .venv/bin/python examples/known_answer.py --seeds 0 1 2 --algos SACALaM SACLagNet SAC
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

import omnisafe_alam  # noqa: F401
from omnisafe_alam.envs.limit import ENV_ID, SAC_BASELINE_CFGS, evaluate_policy, optimal_multiplier
from omnisafe_alam.runs import load_run, markdown_table, stability_metrics

BIN = Path(sys.executable).parent


def train(algo: str, seed: int, steps: int, log_dir: Path, reuse: bool = False) -> Path:
    existing = list((log_dir / f'{algo}-s{seed}' / 'train').glob('*/seed-*'))
    if reuse and existing:
        return existing[0]
    args = [
        str(BIN / 'omnisafe'), 'train', '--algo', algo, '--env-id', ENV_ID,
        '--total-steps', str(steps), '--torch-threads', '1', '--log-dir', str(log_dir / f'{algo}-s{seed}'),
        '--custom-cfgs', 'seed', '--custom-cfgs', str(seed),
        '--custom-cfgs', 'logger_cfgs:use_tensorboard', '--custom-cfgs', 'False',
    ]
    if algo == 'SAC':
        for key, value in SAC_BASELINE_CFGS.items():
            args += ['--custom-cfgs', key, '--custom-cfgs', value]
    out = subprocess.run(args, capture_output=True, text=True, check=False)
    if out.returncode:
        raise RuntimeError(f'{algo} seed {seed} failed:\n{out.stderr[-3000:]}')
    (run,) = (log_dir / f'{algo}-s{seed}' / 'train').glob('*/seed-*')
    return run


def summarize(run: Path, d: float) -> dict:
    loaded = load_run(run)
    row = {'algo': loaded.algo, 'seed': loaded.cfgs['seed']}
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
    parser.add_argument('--steps', type=int, default=8000)
    parser.add_argument('--d', type=float, default=0.1)
    parser.add_argument('--log-dir', type=Path, default=Path('runs/known_answer'))
    parser.add_argument('--workers', type=int, default=2)
    parser.add_argument('--reuse', action='store_true', help='summarise existing runs, train only missing ones')
    args = parser.parse_args()
    jobs = [(a, s) for a in args.algos for s in args.seeds]
    with ThreadPoolExecutor(args.workers) as pool:
        runs = list(pool.map(lambda job: train(*job, args.steps, args.log_dir, args.reuse), jobs))
    table = pd.DataFrame([summarize(run, args.d) for run in runs])
    print(markdown_table(table))
    (args.log_dir / 'summary.json').write_text(table.to_json(orient='records', indent=2))


if __name__ == '__main__':
    main()
