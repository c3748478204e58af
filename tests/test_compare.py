"""Comparing runs: the statistics by hand, the grid files, and the plots from a tiny real grid."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import BIN, REPO, run_cli, write_grid
from omnisafe_alam.tools.compare import (
    config_bounds,
    format_interval,
    interval95,
    mean_ci95,
    normalised_summary,
    t_critical_95,
)


def test_mean_ci95_by_hand() -> None:
    # [1, 3]: mean 2, sd sqrt(2), sem 1, t(1) = 12.706
    assert mean_ci95([1.0, 3.0]) == pytest.approx((2.0, 12.706))
    # [1, 2, 3]: sem = 1 / sqrt(3), t(2) = 4.303
    assert mean_ci95([1.0, 2.0, 3.0]) == pytest.approx((2.0, 4.303 / 3**0.5))
    mean, half = mean_ci95([5.0])
    assert mean == 5.0 and half != half  # NaN: no interval from one seed
    assert t_critical_95(100) == 1.96


def test_intervals_of_nonnegative_quantities_stop_at_zero() -> None:
    # [0, 0, 3]: mean 1, sd sqrt(3), sem 1, t(2) = 4.303 -> [-3.303, 5.303]
    assert interval95([0.0, 0.0, 3.0]) == pytest.approx((1.0, -3.303, 5.303))
    assert interval95([0.0, 0.0, 3.0], nonnegative=True) == pytest.approx((1.0, 0.0, 5.303))
    assert format_interval([0.0, 0.0, 3.0], nonnegative=True) == '1.00 [0.00, 5.30]'
    assert format_interval([-1.0, 1.0, 3.0]) == '1.00 [-3.97, 5.97]'  # a return may be negative
    assert format_interval([2.5]) == '2.50' and format_interval([float('nan')]) == 'n/a'


def test_a_capped_multipliers_interval_stops_at_the_cap() -> None:
    # [10, 10, 7]: mean 9, sd sqrt(3), sem 1 -> [4.697, 13.303], cut at multiplier_max 10
    assert interval95([10.0, 10.0, 7.0], nonnegative=True, upper=10.0) == pytest.approx((9.0, 4.697, 10.0))
    # rho [5, 5, 2]: mean 4 -> [-0.303, 8.303], cut to [rho_init 1, rho_max 5]
    assert interval95([5.0, 5.0, 2.0], lower=1.0, upper=5.0) == pytest.approx((4.0, 1.0, 5.0))
    runs = [{'alam_cfgs': {'multiplier_max': 10, 'rho_init': 1, 'rho_max': 5}},
            {'alam_cfgs': {'multiplier_max': 20, 'rho_init': 2, 'rho_max': 5}}, {'lagrange_cfgs': {}}]
    assert config_bounds(runs[:2], 'multiplier') == (None, 20.0)
    assert config_bounds(runs[:2], 'rho') == (1.0, 5.0)
    assert config_bounds(runs, 'multiplier') == (None, None)  # SACLag's multiplier has no cap
    assert config_bounds(runs[:2], 'ep_cost') == (None, None)


def test_normalised_summary_by_hand() -> None:
    per_run = pd.DataFrame(
        {
            'env_id': ['A', 'A', 'B', 'B'],
            'algo': ['x', 'y', 'x', 'y'],
            'return': [10.0, 20.0, 1.0, 3.0],
            'ep_cost': [5.0, 0.0, 2.0, 2.0],
        },
    )
    summary = normalised_summary(per_run).set_index('algo')
    # task A: x -> return 0, cost 1; y -> 1, 0. Task B: x -> 0; y -> 1; costs equal -> 0.5
    assert summary.loc['x', 'norm_return'] == pytest.approx(0.0)
    assert summary.loc['y', 'norm_return'] == pytest.approx(1.0)
    assert summary.loc['x', 'norm_cost'] == pytest.approx(0.75)  # mean(1, 0.5)
    assert summary.loc['y', 'norm_cost'] == pytest.approx(0.25)  # mean(0, 0.5)


@pytest.mark.parametrize(
    'name',
    ['benchmark_offpolicy.yaml', 'benchmark_offpolicy_2core.yaml', 'benchmark_onpolicy.yaml'],
)
def test_grid_files_parse_and_every_variant_validates(name: str) -> None:
    from omnisafe.common.experiment_grid import ExperimentGrid

    import omnisafe_alam  # noqa: F401

    config = yaml.safe_load((REPO / 'examples' / name).read_text())
    grid = ExperimentGrid('check')
    for key, values in config.items():
        grid.add(key=key, vals=values)
    variants = grid.variants()
    for variant in variants:
        grid.check_variant_vaild(variant)
    algos = {v['algo'] for v in variants}
    envs = {v['env_id'] for v in variants}
    assert {'SafetyPointGoal1-v0', 'SafetyPointCircle1-v0'} <= envs
    assert len({v['seed'] for v in variants}) >= 2
    if 'off' in name:
        assert algos == {'SACALaM', 'SACALaMGA', 'SACLagNet', 'ASAC', 'SACFPI', 'SACLag', 'SACPID'}
    else:
        assert algos == {'P3O', 'OnCRPO'}


def test_compare_on_a_tiny_finished_grid(tmp_path: Path) -> None:
    grid = write_grid(tmp_path / 'grid.yaml', ['SACALaM', 'SACLag'], 'StatewiseLimit-v0', [0, 1], 600, 200, 200)
    out = run_cli(
        [str(BIN / 'omnisafe'), 'benchmark', 'tiny', '2', str(grid), '--log-dir', str(tmp_path)],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = tmp_path / 'compare'
    out = run_cli(
        [str(BIN / 'omnisafe-alam'), 'compare', str(tmp_path / 'benchmark' / 'tiny'),
         '--out', str(result), '--eval-episodes', '2'],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for png in ('learning_curves.png', 'normalised_summary.png', 'stability.png'):
        assert (result / png).stat().st_size > 10_000
        assert (result / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    per_run = pd.read_csv(result / 'per_run.csv')
    assert sorted(per_run['algo']) == ['SACALaM', 'SACALaM', 'SACLag', 'SACLag']
    assert (per_run['steps'] == 600).all()  # each run's final TotalEnvSteps
    assert (per_run['train_s'] > 0).all() and 'Training time:' in (result / 'comparison.md').read_text()
    assert per_run['eval_unsafe_steps'].between(0, 1).all()  # one-decision episodes
    assert per_run.loc[per_run.algo == 'SACALaM', 'unsafe_steps'].notna().all()
    assert (per_run['multiplier_tv_2nd_half'] >= 0).all()  # SACLag's scalar multiplier too
    table = (result / 'comparison.md').read_text()
    assert '| StatewiseLimit-v0 | SACALaM | 2 | 600 |' in table
    # every cost interval is cut at zero: no '[-' in the ep_cost column
    lines = table.splitlines()
    header = next(line for line in lines if line.startswith('| task'))
    cost_column = [c.strip() for c in header.strip('|').split('|')].index('ep_cost')
    cells = [[c.strip() for c in line.strip('|').split('|')] for line in lines if line.startswith('| StatewiseLimit')]
    assert len(cells) == 2 and all('[-' not in row[cost_column] and not row[cost_column].startswith('-') for row in cells)
    # the return-against-cost figure, with the evaluation panel, and the multiplier's cap kept in
    # the rows so that a later comparison joining per_run.csv alone still cuts there
    assert (result / 'tradeoff.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    cap = per_run.set_index('algo')['cfg:alam_cfgs:multiplier_max']
    assert (cap['SACALaM'] == 10.0).all() and cap['SACLag'].isna().all()


def test_stale_checkpoint_is_not_evaluated(tmp_path: Path) -> None:
    """A run whose newest checkpoint predates its last epoch must not be evaluated as final."""
    import json

    import torch

    from omnisafe_alam.tools.compare import RunRecord, evaluate_unsafe_steps

    run = tmp_path / 'run'
    (run / 'torch_save').mkdir(parents=True)
    (run / 'config.json').write_text(json.dumps({'algo': 'SACLag', 'env_id': 'StatewiseLimit-v0'}))
    torch.save({'pi': {}}, run / 'torch_save' / 'epoch-0.pt')
    progress = pd.DataFrame({'Metrics/EpRet': [1.0, 2.0], 'Metrics/EpCost': [0.0, 0.0]})
    with pytest.warns(UserWarning, match='save_model_freq'):
        out = evaluate_unsafe_steps(RunRecord(run, 'SACLag', 'StatewiseLimit-v0', 0, progress), 2)
    assert all(v != v for v in out.values())  # NaN: left empty


def _per_run_csv(path: Path, rows: list[dict]) -> Path:
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_earlier_per_run_tables_join_a_comparison_by_hand(tmp_path: Path) -> None:
    """Rows of earlier per_run.csv files make the table and the figures without their runs: the
    intervals by hand (t(1) = 12.706), cut at 0 for a cost and at a cap carried in the rows."""
    from omnisafe_alam.tools.compare import compare

    env = 'SafetyPointGoal1-v0'
    first = _per_run_csv(tmp_path / 'a.csv', [
        {'env_id': env, 'algo': 'SACPID', 'seed': s, 'steps': 200000, 'return': r, 'ep_cost': c,
         'eval_return': r, 'eval_unsafe_steps': u}
        for s, r, c, u in ((0, 1.0, 0.0, 40.0), (1, 3.0, 2.0, 60.0))
    ])
    second = _per_run_csv(tmp_path / 'b.csv', [
        {'env_id': env, 'algo': 'SACALaM', 'seed': s, 'steps': 200000, 'train_s': 3600.0, 'return': 2.0,
         'ep_cost': 1.0, 'multiplier': lam, 'cost_settled_at': at, 'cfg:alam_cfgs:multiplier_max': 10.0}
        for s, lam, at in ((0, 8.0, float('nan')), (1, 10.0, 4000.0))
    ])
    out = compare([first, second], tmp_path / 'out')
    assert set(out) == {'table', 'per_run', 'summary', 'tradeoff'}  # no curves without runs
    assert out['tradeoff'].read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    table = out['table'].read_text()
    header = next(line for line in table.splitlines() if line.startswith('| task'))
    names = [c.strip() for c in header.strip('|').split('|')]
    rows = {cells[1]: dict(zip(names, cells)) for cells in (
        [c.strip() for c in line.strip('|').split('|')] for line in table.splitlines() if line.startswith(f'| {env}'))}
    assert rows['SACPID']['return'] == '2.00 [-10.71, 14.71]'
    assert rows['SACPID']['ep_cost'] == '1.00 [0.00, 13.71]'  # cut at 0
    assert rows['SACPID']['eval_unsafe_steps'] == '50.00 [0.00, 177.06]'
    assert rows['SACALaM']['multiplier'] == '9.00 [0.00, 10.00]'  # cut at the cap the rows carry
    assert rows['SACALaM']['cost_settled'] == '1/2, 4,000'
    assert rows['SACPID']['cost_settled'] == 'n/a'  # its table did not say
    assert 'over 2 runs (400,000 environment steps' in table  # only the rows with a training time
    per_run = pd.read_csv(out['per_run'])
    assert len(per_run) == 4 and not any(c.startswith('_') for c in per_run.columns)


def test_tradeoff_points_by_hand() -> None:
    from omnisafe_alam.tools.compare import tradeoff_points

    nan = float('nan')
    frame = pd.DataFrame({
        'env_id': ['E'] * 4, 'algo': ['A', 'A', 'A', 'B'], 'seed': [0, 1, 2, 0],
        'eval_unsafe_steps': [10.0, 20.0, nan, nan], 'eval_return': [1.0, 2.0, 3.0, 4.0],
    })
    points = tradeoff_points(frame, 'eval_unsafe_steps', 'eval_return')
    # A: the two seeds with both values; B: none, so no row
    assert points.to_dict('records') == [{'env_id': 'E', 'algo': 'A', 'seeds': 2, 'cost': 15.0, 'return': 1.5}]
    assert tradeoff_points(frame, 'ep_cost', 'return').empty  # columns absent


def test_bad_per_run_tables_are_named(tmp_path: Path) -> None:
    from omnisafe_alam.tools.compare import CompareError, compare

    row = {'env_id': 'E', 'algo': 'SACPID', 'seed': 0, 'steps': 10, 'return': 1.0, 'ep_cost': 0.0}
    good = _per_run_csv(tmp_path / 'good.csv', [row])
    with pytest.raises(FileNotFoundError, match='missing.csv'):
        compare([tmp_path / 'missing.csv'], tmp_path / 'out')
    short = _per_run_csv(tmp_path / 'short.csv', [{k: v for k, v in row.items() if k != 'ep_cost'}])
    with pytest.raises(CompareError, match=r'short\.csv lacks the column\(s\) ep_cost'):
        compare([short], tmp_path / 'out')
    with pytest.raises(CompareError, match="SACPID on E, seed 0.*relabel the 'algo' column"):
        compare([good, _per_run_csv(tmp_path / 'again.csv', [row])], tmp_path / 'out')
    assert not (tmp_path / 'out').exists()  # refused before anything was written


def _fake_run(root: Path, cfg: dict) -> None:
    root.mkdir(parents=True)
    (root / 'config.json').write_text(json.dumps(cfg))
    pd.DataFrame({'Metrics/EpRet': [1.0], 'Metrics/EpCost': [0.0], 'TotalEnvSteps': [10]}).to_csv(
        root / 'progress.csv', index=False)


def test_a_run_away_from_the_shipped_settings_says_so_even_alone(tmp_path: Path) -> None:
    """A run whose own settings (alam_cfgs) differ from what ships for its task carries them in
    its label, alone or not; one at the shipped settings keeps the bare name, numbers compare by
    value (10 is 10.0), and a run made before a key existed counts with the value it trained with."""
    from omnisafe_alam.glue.defaults import load_defaults
    from omnisafe_alam.tools.compare import collect_runs

    goal = 'SafetyPointGoal1-v0'
    shipped = dict(load_defaults('SACALaM', goal)['alam_cfgs'])
    assert (shipped['cost_gamma'], shipped['cost_critic_action_noise'], shipped['multiplier_max']) == (0.8, 0.15, 10.0)
    shipped['multiplier_max'] = 10  # as an int: the same value

    def cfg(seed: int, **alam: object) -> dict:
        return {'algo': 'SACALaM', 'env_id': goal, 'seed': seed, 'alam_cfgs': shipped | alam}

    _fake_run(tmp_path / 'a' / 'shipped-0', cfg(0))
    _fake_run(tmp_path / 'a' / 'cg-1', cfg(1, cost_gamma=0.95, multiplier_max=2.0))
    old = cfg(2)
    del old['alam_cfgs']['cost_critic_action_noise']  # made before the key: it trained with 0.0
    _fake_run(tmp_path / 'a' / 'old-2', old)
    labels = sorted((r.algo, r.seed) for r in collect_runs([tmp_path / 'a']))
    assert labels == [
        ('SACALaM', 0),
        ('SACALaM (alam_cfgs:cost_critic_action_noise=0.0)', 2),
        ('SACALaM (alam_cfgs:cost_gamma=0.95, alam_cfgs:multiplier_max=2.0)', 1),
    ]
    # sharing a seed, the departures and what varied are both shown
    _fake_run(tmp_path / 'b' / 'shipped', cfg(0))
    _fake_run(tmp_path / 'b' / 'd05', cfg(0, cost_gamma=0.95, d=0.5))
    labels = sorted(r.algo for r in collect_runs([tmp_path / 'b']))
    assert labels == [
        'SACALaM (alam_cfgs:cost_gamma=0.8, alam_cfgs:d=0.1)',
        'SACALaM (alam_cfgs:cost_gamma=0.95, alam_cfgs:d=0.5)',
    ]


def test_runs_of_a_swept_key_are_labelled_by_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A grid that varied a key gives runs of one algorithm and seed: compare tells them apart by
    the config values that differ among them (not the seed or where they logged), and runs that
    differ in nothing are refused before any policy is evaluated."""
    from omnisafe_alam.tools.compare import CompareError, collect_runs, compare

    def cfg(seed: int, alpha: float, algo: str = 'SACALaM') -> dict:
        return {'algo': algo, 'env_id': 'E', 'seed': seed, 'algo_cfgs': {'alpha': alpha, 'gamma': 0.99},
                'logger_cfgs': {'log_dir': f'/runs/{seed}-{alpha}'},
                'exp_increment_cfgs': {'seed': seed, 'algo_cfgs': {'alpha': alpha}}}

    for seed in (0, 1):
        for alpha in (0.0001, 0.001):
            _fake_run(tmp_path / 'grid' / f'seed-{seed},alpha={alpha}', cfg(seed, alpha))
    _fake_run(tmp_path / 'grid' / 'pid-0', cfg(0, 0.5, algo='SACPID'))  # alone: keeps its name
    labels = sorted((r.algo, r.seed) for r in collect_runs([tmp_path / 'grid']))
    assert labels == [
        ('SACALaM (algo_cfgs:alpha=0.0001)', 0), ('SACALaM (algo_cfgs:alpha=0.0001)', 1),
        ('SACALaM (algo_cfgs:alpha=0.001)', 0), ('SACALaM (algo_cfgs:alpha=0.001)', 1),
        ('SACPID', 0),
    ]
    _fake_run(tmp_path / 'same' / 'a', cfg(0, 0.001))
    _fake_run(tmp_path / 'same' / 'b', cfg(0, 0.001) | {'logger_cfgs': {'log_dir': '/elsewhere'}})
    import omnisafe_alam.tools.compare as compare_module

    def never(*_: object) -> None:
        raise AssertionError('evaluated a policy before refusing the runs')

    monkeypatch.setattr(compare_module, 'evaluate_unsafe_steps', never)
    with pytest.raises(CompareError, match='SACALaM on E, seed 0'):
        compare([tmp_path / 'same'], tmp_path / 'out', eval_episodes=5)
    assert not (tmp_path / 'out').exists()
