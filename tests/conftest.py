"""Shared helpers: tiny configurations and algorithm instances built through omnisafe.Agent."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV_ID = 'SafetyPointGoal1-v0'


def tiny_cfgs(log_dir: Path, **algo_cfgs: Any) -> dict[str, Any]:
    """A configuration that builds in seconds: 32-unit nets, 200-step epochs, no TensorBoard."""
    return {
        'seed': 0,
        'train_cfgs': {'total_steps': 400, 'torch_threads': 1},
        'algo_cfgs': {
            'steps_per_epoch': 200,
            'start_learning_steps': 100,
            'batch_size': 32,
            'size': 5000,
            **algo_cfgs,
        },
        'logger_cfgs': {'log_dir': str(log_dir), 'use_tensorboard': False},
        'model_cfgs': {'actor': {'hidden_sizes': [32, 32]}, 'critic': {'hidden_sizes': [32, 32]}},
        'alam_cfgs': {'multiplier_hidden_sizes': [32, 32], 'm_lambda': 10},
    }


def build_algo(algo: str, log_dir: Path, fill: int = 300, env_id: str = ENV_ID, **overrides: Any) -> Any:
    """The algorithm instance (not yet trained), its replay buffer filled with random steps."""
    import omnisafe

    import omnisafe_alam  # noqa: F401

    cfgs = tiny_cfgs(log_dir)
    for group, values in overrides.items():
        cfgs.setdefault(group, {}).update(values)
    from omnisafe_alam.glue.defaults import SETTINGS_GROUP

    if SETTINGS_GROUP.get(algo) != 'alam_cfgs':
        cfgs.pop('alam_cfgs')
    agent = omnisafe.Agent(algo, env_id, custom_cfgs=cfgs)
    inner = agent.agent
    inner._env.rollout(  # noqa: SLF001
        rollout_step=fill,
        agent=inner._actor_critic,  # noqa: SLF001
        buffer=inner._buf,  # noqa: SLF001
        logger=inner._logger,  # noqa: SLF001
        use_rand_action=True,
    )
    return inner


def run_cli(args: list[str], cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """Run a console script of this venv in a fresh interpreter (as a user would)."""
    full_env = {**os.environ, 'PYTHONUNBUFFERED': '1', **env}
    return subprocess.run(
        args,
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def cli_tiny_args(algo: str, steps: int = 400, eval_episodes: int = 0) -> list[str]:
    """`omnisafe train` arguments for a tiny run, passed the way a user types them.

    No evaluation episodes unless asked: on SafetyPointGoal1-v0 each one rebuilds the MuJoCo
    world and steps 1000 times, about 11 s of a 26 s tiny run (cProfile, 2026-12-07).
    """
    pairs = {
        'train_cfgs:eval_episodes': str(eval_episodes),
        'algo_cfgs:steps_per_epoch': '200',
        'algo_cfgs:start_learning_steps': '100',
        'algo_cfgs:batch_size': '32',
        'algo_cfgs:size': '5000',
        'model_cfgs:actor:hidden_sizes': '[32,32]',
        'model_cfgs:critic:hidden_sizes': '[32,32]',
        'alam_cfgs:multiplier_hidden_sizes': '[32,32]',
        'alam_cfgs:m_lambda': '20',
        'logger_cfgs:use_tensorboard': 'False',
        'logger_cfgs:save_model_freq': '1',
    }
    if algo not in ('SACALaM', 'SACALaMGA', 'SACLagNet', 'ASAC'):
        pairs = {k: v for k, v in pairs.items() if not k.startswith('alam_cfgs')}
    args = [
        str(BIN / 'omnisafe'), 'train', '--algo', algo, '--env-id', ENV_ID,
        '--total-steps', str(steps), '--torch-threads', '1',
    ]
    for key, value in pairs.items():
        args += ['--custom-cfgs', key, '--custom-cfgs', value]
    return args


@pytest.fixture()
def dotted_tmp(tmp_path: Path) -> Path:
    """A log directory whose path contains a dot (OmniSafe's CLI used to crash on those)."""
    path = tmp_path / 'tmp.8JH2ICdwY1'
    path.mkdir()
    return path


def write_grid(path: Path, algos: list[str], env_id: str, seeds: list[int], steps: int, epoch: int, warmup: int) -> Path:
    """A tiny `omnisafe benchmark` grid file."""
    path.write_text(
        f'algo: [{", ".join(algos)}]\n'
        f'env_id: [{env_id}]\n'
        f'seed: [{", ".join(map(str, seeds))}]\n'
        f'train_cfgs:total_steps: [{steps}]\n'
        'train_cfgs:torch_threads: [1]\n'
        f'algo_cfgs:steps_per_epoch: [{epoch}]\n'
        f'algo_cfgs:start_learning_steps: [{warmup}]\n'
        'algo_cfgs:batch_size: [32]\n'
        'logger_cfgs:use_tensorboard: [False]\n'
        'logger_cfgs:save_model_freq: [1]\n'
        'train_cfgs:eval_episodes: [0]\n',
    )
    return path


def resumable_grid_text(algos: str, steps: int, seeds: str = '0', threads: int = 1, env_id: str = 'StatewiseLimit-v0') -> str:
    """A tiny `omnisafe-alam grid` file body: 200-step epochs, a full checkpoint every epoch."""
    return (
        f'algo: [{algos}]\n'
        f'env_id: [{env_id}]\n'
        f'seed: [{seeds}]\n'
        f'train_cfgs:total_steps: [{steps}]\n'
        f'train_cfgs:torch_threads: [{threads}]\n'
        'algo_cfgs:steps_per_epoch: [200]\n'
        'algo_cfgs:start_learning_steps: [100]\n'
        'algo_cfgs:batch_size: [32]\n'
        'algo_cfgs:warmup_epochs: [0]\n'
        'model_cfgs:actor:hidden_sizes: [[16, 16]]\n'
        'model_cfgs:critic:hidden_sizes: [[16, 16]]\n'
        'logger_cfgs:use_tensorboard: [False]\n'
        'logger_cfgs:save_model_freq: [1]\n'
        'checkpoint_cfgs:state_freq: [1]\n'
    )
