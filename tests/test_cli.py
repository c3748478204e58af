"""Training, evaluation and benchmarking through OmniSafe's own CLI, in fresh interpreters."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import BIN, cli_tiny_args, run_cli, write_grid

DIAGNOSTICS = [
    'Metrics/MultiplierMean',
    'Metrics/MultiplierMax',
    'Metrics/Rho',
    'Metrics/Violation',
    'Metrics/FeasibleFrac',
    'Loss/Loss_multiplier',
    'Metrics/EpUnsafeSteps',
    'Value/F_hat',
]


def _run_dir(log_dir: Path, algo: str) -> Path:
    (run,) = (log_dir / 'train' / f'{algo}-{{SafetyPointGoal1-v0}}').glob('seed-*')
    return run


@pytest.fixture(scope='module')
def sacalam_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One tiny SACALaM run through `omnisafe train`, into a dotted --log-dir, with overrides."""
    log_dir = tmp_path_factory.mktemp('cli') / 'tmp.8JH2ICdwY1'
    log_dir.mkdir()
    args = cli_tiny_args('SACALaM', eval_episodes=1) + [
        '--log-dir', str(log_dir),
        '--custom-cfgs', 'alam_cfgs:rho_max', '--custom-cfgs', '10',
        '--custom-cfgs', 'alam_cfgs:d', '--custom-cfgs', '1e-2',
        '--custom-cfgs', 'alam_cfgs:cost_indicator', '--custom-cfgs', 'false',
        '--custom-cfgs', 'alam_cfgs:cost_critic_hidden_sizes', '--custom-cfgs', '[48,16]',
    ]
    out = run_cli(args, cwd=log_dir)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return _run_dir(log_dir, 'SACALaM')


def test_custom_cfgs_reach_the_run_config_with_their_types(sacalam_run: Path) -> None:
    cfg = json.loads((sacalam_run / 'config.json').read_text())
    assert cfg['algo'] == 'SACALaM'
    assert cfg['alam_cfgs']['rho_max'] == 10.0
    assert cfg['alam_cfgs']['d'] == 0.01
    assert cfg['alam_cfgs']['cost_indicator'] is False
    assert cfg['model_cfgs']['actor']['hidden_sizes'] == [32, 32]


def test_wider_cost_critics_train_save_and_load(sacalam_run: Path) -> None:
    """``alam_cfgs.cost_critic_hidden_sizes`` typed on the command line widens the twin cost
    critics alone; the saved run loads with them and evaluates ``F_hat``."""
    import torch

    from omnisafe_alam.tools.runs import load_run

    cfg = json.loads((sacalam_run / 'config.json').read_text())
    assert cfg['alam_cfgs']['cost_critic_hidden_sizes'] == [48, 16]
    run = load_run(sacalam_run)
    widths = [m.out_features for m in run.cost_critic.modules() if isinstance(m, torch.nn.Linear)]
    assert widths == [48, 16, 1, 48, 16, 1]  # the twins
    actor_layers = [m for m in run.actor.modules() if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in actor_layers][:2] == [32, 32]
    f_hat = run.f_hat(torch.zeros(3, actor_layers[0].in_features), k=4)
    assert f_hat.shape == (3,) and torch.isfinite(f_hat).all() and (f_hat >= 0).all()


def test_training_logs_the_state_wise_diagnostics(sacalam_run: Path) -> None:
    progress = pd.read_csv(sacalam_run / 'progress.csv')
    assert len(progress) == 2  # 400 steps / 200 per epoch
    for key in DIAGNOSTICS:
        assert key in progress.columns, key
    last = progress.iloc[-1]
    assert last['TotalEnvSteps'] == 400
    # rho only moves by the schedule's factor sigma = 1.01, once per dual cycle at most: 300
    # learning steps at m_lambda 20, epoch 0 held back -> at most 10 cycles in epoch 1
    cycles = math.log(last['Metrics/Rho']) / math.log(1.01)
    assert abs(cycles - round(cycles)) < 1e-3 and 0 <= round(cycles) <= 10, last['Metrics/Rho']
    assert progress[['Loss/Loss_pi', 'Loss/Loss_cost_critic']].notna().all().all()
    # OmniSafe's evaluation through the plugin's adapter: one deterministic episode per epoch
    assert (progress['Metrics/TestEpLen'] == 1000).all() and progress['Metrics/TestEpRet'].notna().all()


def test_checkpoint_holds_state_dicts_that_load_with_weights_only(sacalam_run: Path) -> None:
    final = sacalam_run / 'torch_save' / 'epoch-2.pt'
    assert final.exists(), sorted(p.name for p in (sacalam_run / 'torch_save').iterdir())
    params = torch.load(final, weights_only=True)
    assert set(params) == {'pi', 'cost_critic', 'multiplier', 'dual'}
    # the checkpoint carries the dual state the last epoch logged
    last = pd.read_csv(sacalam_run / 'progress.csv').iloc[-1]
    assert float(params['dual']['rho']) == pytest.approx(last['Metrics/Rho'], rel=1e-6)
    assert any(k.endswith('weight') for k in params['multiplier'])


def test_omnisafe_eval_of_the_saved_run(sacalam_run: Path) -> None:
    out = run_cli(
        [str(BIN / 'omnisafe'), 'eval', str(sacalam_run.parent), '--num-episode', '1', '--no-render'],
        cwd=sacalam_run,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    checkpoints = list((sacalam_run / 'torch_save').glob('epoch-*.pt'))
    assert len(checkpoints) == 3  # epoch-0 (untrained), 1 and 2 (save_model_freq=1)
    assert out.stdout.count('Average episode reward') == len(checkpoints)


def test_omnisafe_baseline_takes_widths_from_the_command_line(tmp_path: Path) -> None:
    """A fair comparison types the same widths for OmniSafe's SACLag as for the plugin's
    algorithms; OmniSafe's parser alone passed ``'[32,32]'`` on as strings and SACLag crashed
    building its first layer."""
    out = run_cli(cli_tiny_args('SACLag') + ['--log-dir', str(tmp_path)], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    run = _run_dir(tmp_path, 'SACLag')
    cfg = json.loads((run / 'config.json').read_text())
    assert cfg['model_cfgs']['actor']['hidden_sizes'] == [32, 32]
    assert cfg['model_cfgs']['critic']['hidden_sizes'] == [32, 32]
    state = torch.load(run / 'torch_save' / 'epoch-2.pt', map_location='cpu')
    first = next(v for k, v in state['pi'].items() if k.endswith('weight'))
    assert first.shape[0] == 32


@pytest.mark.parametrize('algo', ['SACALaMGA', 'SACLagNet', 'ASAC', 'SACFPI', 'ALGD'])
def test_variants_train_through_omnisafe_train(tmp_path: Path, algo: str) -> None:
    # ALGD's 10 gradient steps per environment step (the reference's) would make this run 10x longer
    extra = ['--custom-cfgs', 'algo_cfgs:update_iters', '--custom-cfgs', '1'] if algo == 'ALGD' else []
    out = run_cli(cli_tiny_args(algo) + extra + ['--log-dir', str(tmp_path)], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    progress = pd.read_csv(_run_dir(tmp_path, algo) / 'progress.csv')
    assert len(progress) == 2
    assert progress['Loss/Loss_pi'].notna().all()
    if algo == 'ASAC':
        assert 'Metrics/LagrangeMultiplier' in progress.columns
    if algo == 'SACLagNet':
        assert (progress['Metrics/Rho'] == 1.0).all()  # no penalty schedule
    if algo == 'SACFPI':
        # its CDF critics fill OmniSafe's cost-critic slot; G in [0, 1] after a first epoch
        assert {'Metrics/FeasibleFrac', 'Metrics/BarrierWeight', 'Value/G_hat'} <= set(progress.columns)
        assert 'Metrics/MultiplierMean' not in progress.columns
        assert progress['Loss/Loss_cost_critic'].iloc[-1] > 0
    if algo == 'ALGD':
        # a diffusion policy, one multiplier, a cost ensemble; and `omnisafe eval` reads it
        assert {'Metrics/Lambda', 'Loss/Loss_score', 'Value/cost_risk'} <= set(progress.columns)
        assert 'Metrics/MultiplierMean' not in progress.columns
        assert progress['Metrics/Lambda'].iloc[-1] > 0 and progress['Loss/Loss_score'].iloc[-1] > 0
        run = _run_dir(tmp_path, algo)
        out = run_cli([str(BIN / 'omnisafe'), 'eval', str(run.parent), '--num-episode', '1', '--no-render'], cwd=tmp_path)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
        assert out.stdout.count('Average episode reward') == len(list((run / 'torch_save').glob('epoch-*.pt')))


def test_two_vector_envs_do_not_hang(tmp_path: Path) -> None:
    args = cli_tiny_args('SACALaM') + ['--log-dir', str(tmp_path), '--vector-env-nums', '2']
    out = run_cli(args, cwd=tmp_path, timeout=180)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    progress = pd.read_csv(_run_dir(tmp_path, 'SACALaM') / 'progress.csv')
    # OmniSafe counts vector steps as 2*(i)+1: 199 and 399 mean 200 and 400 env steps
    assert progress['TotalEnvSteps'].tolist() == [199, 399]


@pytest.mark.parametrize(('keep', 'updates', 'rows'), [(True, 2, 32), (False, 1, 64)])
def test_vector_envs_keep_the_update_ratio_and_batch(tmp_path: Path, keep: bool, updates: int, rows: int) -> None:
    """Two envs: per vector step two gradient steps on 32 transitions (one env's ratio and batch),
    or OmniSafe's one step on 2 x 32 when ``keep_update_ratio`` is off."""
    from conftest import build_algo

    algo = build_algo(
        'SACALaM',
        tmp_path,
        env_id='StatewiseLimit-v0',
        train_cfgs={'vector_env_nums': 2},
        algo_cfgs={'keep_update_ratio': keep},
    )
    assert algo._buf.sample_batch()['obs'].shape[0] == rows
    before = algo._update_count
    algo._update()
    assert algo._update_count - before == updates


def test_vector_envs_need_a_batch_they_divide(tmp_path: Path) -> None:
    from conftest import build_algo

    with pytest.raises(ValueError, match='batch_size=33 must be divisible by train_cfgs.vector_env_nums=2'):
        build_algo('SACALaM', tmp_path, env_id='StatewiseLimit-v0', train_cfgs={'vector_env_nums': 2}, algo_cfgs={'batch_size': 33})


@pytest.mark.parametrize(
    ('key', 'value', 'named'),
    [
        ('alam_cfgs:sigma', '1', 'alam_cfgs.sigma'),
        ('alam_cfgs:rho_max', '0.5', 'alam_cfgs.rho_max'),
        ('alam_cfgs:K', '0', 'alam_cfgs.K'),
        ('algo_cfgs:cost_normalize', 'True', 'algo_cfgs.cost_normalize'),
        ('algo_cfgs:use_cost', 'False', 'algo_cfgs.use_cost'),
    ],
)
def test_bad_config_stops_before_training(tmp_path: Path, key: str, value: str, named: str) -> None:
    args = cli_tiny_args('SACALaM') + ['--log-dir', str(tmp_path), '--custom-cfgs', key, '--custom-cfgs', value]
    out = run_cli(args, cwd=tmp_path, timeout=120)
    assert out.returncode != 0
    assert named in out.stdout + out.stderr
    assert not (tmp_path / 'train').exists()  # nothing was built or logged


def test_benchmark_grid_then_analyze(tmp_path: Path) -> None:
    grid = write_grid(tmp_path / 'grid.yaml', ['SACALaM', 'SACLag'], 'SafetyPointGoal1-v0', [0], 400, 200, 100)
    out = run_cli(
        [str(BIN / 'omnisafe'), 'benchmark', 'tiny', '2', str(grid), '--log-dir', str(tmp_path)],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    runs = sorted((tmp_path / 'benchmark' / 'tiny').glob('*/*-{SafetyPointGoal1-v0}/seed-*'))
    assert sorted(r.parent.name.split('-')[0] for r in runs) == ['SACALaM', 'SACLag']
    for run in runs:
        assert len(pd.read_csv(run / 'progress.csv')) == 2
    out = run_cli(
        [str(BIN / 'omnisafe'), 'analyze-grid', str(tmp_path / 'benchmark' / 'tiny'), 'algo'],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert list(tmp_path.glob('algo---SafetyPointGoal1-v0---*.png'))


def test_agent_api_in_a_user_script_without_importing_the_plugin(tmp_path: Path) -> None:
    script = tmp_path / 'user_script.py'
    script.write_text(
        'import omnisafe\n'
        f'cfgs = {{"train_cfgs": {{"total_steps": 400, "torch_threads": 1, "eval_episodes": 0}},\n'
        '        "algo_cfgs": {"steps_per_epoch": 200, "start_learning_steps": 100, "batch_size": 32},\n'
        f'        "logger_cfgs": {{"log_dir": {str(tmp_path)!r}, "use_tensorboard": False}}}}\n'
        'agent = omnisafe.Agent("SACALaM", "SafetyPointGoal1-v0", custom_cfgs=cfgs)\n'
        'agent.learn()\n'
        'print("LEARNED", type(agent.agent).__module__)\n',
    )
    out = run_cli([sys.executable, str(script)], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'LEARNED omnisafe_alam.core.variants' in out.stdout
    # save_model_freq (100) > epochs (2): the final policy is still saved
    (run,) = (tmp_path / 'SACALaM-{SafetyPointGoal1-v0}').glob('seed-*')
    assert sorted(p.name for p in (run / 'torch_save').iterdir()) == ['epoch-0.pt', 'epoch-2.pt']


def test_compare_and_riskmap_name_bad_input_without_a_traceback(tmp_path: Path) -> None:
    out = run_cli([str(BIN / 'omnisafe-alam'), 'compare', str(tmp_path)], cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert 'error: no finished runs' in out.stderr and 'Traceback' not in out.stdout + out.stderr
    out = run_cli([str(BIN / 'omnisafe-alam'), 'riskmap', str(tmp_path)], cwd=tmp_path, timeout=120)
    assert out.returncode == 2
    assert 'has no config.json' in out.stderr and 'Traceback' not in out.stdout + out.stderr
