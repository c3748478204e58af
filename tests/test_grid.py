"""`omnisafe-alam grid`: expanding a grid file, refusing bad ones, and continuing after a stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import BIN, resumable_grid_text, run_cli
from omnisafe_alam.tools.grid import GridError, check_runs, expand_grid, load_grid, plan, run_state

TASK = 'StatewiseLimit-v0'


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding='utf-8')
    return path


def _grid_text(algos: str, steps: int) -> str:
    return resumable_grid_text(algos, steps, env_id=TASK)


def test_expansion_names_runs_and_applies_groups_where_they_exist(tmp_path: Path) -> None:
    extra = 'algo_cfgs:batch_size: [32, 64]\nalam_cfgs:multiplier_lr: [0.0004]\n'
    grid = load_grid(_write(tmp_path / 'g.yaml', _grid_text('SACLag, SACALaM', 400) + extra))
    runs = expand_grid(grid)
    assert len(runs) == 4  # 2 algorithms x 2 batch sizes
    names = sorted(run.name for run in runs)
    assert names[0] == 'SACALaM-{StatewiseLimit-v0}/seed-0,batch_size=32'
    sac_lag = next(run for run in runs if run.algo == 'SACLag')
    sac_alam = next(run for run in runs if run.algo == 'SACALaM')
    # OmniSafe's SACLag has neither group; SACALaM gets both
    assert 'checkpoint_cfgs' not in sac_lag.custom_cfgs and 'alam_cfgs' not in sac_lag.custom_cfgs
    assert sac_alam.custom_cfgs['checkpoint_cfgs'] == {'state_freq': 1}
    assert sac_alam.custom_cfgs['alam_cfgs'] == {'multiplier_lr': 0.0004}
    assert sac_alam.custom_cfgs['model_cfgs']['actor']['hidden_sizes'] == [16, 16]
    assert sac_alam.custom_cfgs['seed'] == 0 and sac_alam.total_steps == 400
    check_runs(runs)  # every run's config is valid as OmniSafe and the plugin build them


@pytest.mark.parametrize(
    ('extra', 'message'),
    [
        ('algo_cfgs:bogus: [1]\n', "SACLag-{StatewiseLimit-v0}/seed-0: 'Invalid key: bogus'"),
        ('alam_cfgs:d: [-1]\n', 'alam_cfgs.d=-1.0 must be >= 0'),
    ],
)
def test_a_bad_key_or_value_is_refused_naming_the_run(tmp_path: Path, extra: str, message: str) -> None:
    algos = 'SACLag, SACALaM' if 'bogus' in extra else 'SACALaM'
    runs = expand_grid(load_grid(_write(tmp_path / 'g.yaml', _grid_text(algos, 400) + extra)))
    with pytest.raises(GridError, match=message.replace('{', r'\{').replace('}', r'\}')):
        check_runs(runs)
    with pytest.raises(GridError, match='no algorithm of the grid has the key group fpi_cfgs'):
        expand_grid(load_grid(_write(tmp_path / 'f.yaml', _grid_text('SACLag, SACALaM', 400) + 'fpi_cfgs:p_f: [0.1]\n')))
    with pytest.raises(GridError, match='needs a `seed:` line'):
        load_grid(_write(tmp_path / 'h.yaml', 'algo: [SACALaM]\nenv_id: [x]\n'))
    with pytest.raises(GridError, match='must be a non-empty list'):
        load_grid(_write(tmp_path / 'i.yaml', 'algo: [SACALaM]\nenv_id: [x]\nseed: 0\n'))


def _progress(log_dir: Path, algo: str) -> pd.DataFrame:
    (path,) = log_dir.glob(f'{algo}-*/seed-0/*/seed-*/progress.csv')
    return pd.read_csv(path)


def test_a_stopped_grid_continues_where_it_stopped(tmp_path: Path) -> None:
    """SIGTERM mid-grid: the plugin run saves and is resumed, OmniSafe's finished run is kept,
    an unfinished OmniSafe run is set aside and restarted; at the end every run is complete."""
    grid = _write(tmp_path / 'grid.yaml', _grid_text('SACLag, SACALaM', 1200))
    log_dir = tmp_path / 'runs'
    args = [str(BIN / 'omnisafe-alam'), 'grid', str(grid), '--log-dir', str(log_dir), '--jobs', '1']
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    # SACLag cannot resume, so it runs first; stop the grid once SACALaM has two epochs
    deadline = time.time() + 300
    while time.time() < deadline:
        rows = list(log_dir.glob('SACALaM-*/seed-0/*/seed-*/progress.csv'))
        if rows and len(rows[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output[-3000:]  # one run left unfinished
    assert 'stopped; run the same command again' in output
    assert 'FAILED' not in output and 'stopped  SACALaM' in output
    (run,) = [r for r in expand_grid(load_grid(grid)) if r.algo == 'SACALaM']
    state, run_dir = run_state(run, log_dir)
    assert state == 'resume', output[-3000:]
    assert len(_progress(log_dir, 'SACLag')) == 6

    # an OmniSafe run that lost its last epochs cannot resume: it is set aside and redone
    sac_lag_progress = next(log_dir.glob('SACLag-*/seed-0/*/seed-*/progress.csv'))
    frame = pd.read_csv(sac_lag_progress)
    frame.iloc[:2].to_csv(sac_lag_progress, index=False)
    states = {r.algo: s for r, s, _ in plan(expand_grid(load_grid(grid)), log_dir)}
    assert states == {'SACLag': 'restart', 'SACALaM': 'resume'}

    out = run_cli(args, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'set aside' in out.stdout
    assert (log_dir / 'SACLag-{StatewiseLimit-v0}' / 'seed-0.incomplete-1').is_dir()
    for algo in ('SACLag', 'SACALaM'):
        progress = _progress(log_dir, algo)
        assert progress['TotalEnvSteps'].tolist() == [200, 400, 600, 800, 1000, 1200], algo
    from omnisafe_alam.tools.compare import collect_runs

    assert sorted(r.algo for r in collect_runs([log_dir])) == ['SACALaM', 'SACLag']  # not the set-aside one
    again = run_cli([*args, '--dry-run'], cwd=tmp_path)
    assert again.returncode == 0
    assert again.stdout.count('done ') == 2, again.stdout
    config = json.loads(next(log_dir.glob('SACALaM-*/seed-0/*/seed-*/config.json')).read_text())
    assert config['checkpoint_cfgs']['state_freq'] == 1


def test_a_run_trained_otherwise_or_still_training_is_not_touched(tmp_path: Path) -> None:
    """A finished run whose config.json differs from the grid file is refused, naming the key,
    not counted as done; a run whose grid.pid is a live process is left to it."""
    (run,) = expand_grid(load_grid(_write(tmp_path / 'g.yaml', _grid_text('SACLag', 400).replace('checkpoint_cfgs', '#'))))
    run_dir = tmp_path / run.name / 'SACLag-{StatewiseLimit-v0}' / 'seed-000-2026'
    run_dir.mkdir(parents=True)
    saved = json.loads(json.dumps(run.custom_cfgs))
    saved['algo_cfgs']['batch_size'] = 64
    (run_dir / 'config.json').write_text(json.dumps(saved))
    pd.DataFrame({'TotalEnvSteps': [200, 400]}).to_csv(run_dir / 'progress.csv', index=False)
    with pytest.raises(GridError, match=r'algo_cfgs:batch_size=64 \(grid: 32\)'):
        run_state(run, tmp_path)
    saved['algo_cfgs']['batch_size'] = 32
    saved['train_cfgs']['total_steps'] = 200  # a budget change is not a mismatch: 400 >= 400 is done
    (run_dir / 'config.json').write_text(json.dumps(saved))
    assert run_state(run, tmp_path) == ('done', run_dir)
    (tmp_path / run.name / 'grid.pid').write_text(str(os.getpid()))
    assert run_state(run, tmp_path) == ('running', None)


@pytest.mark.parametrize(
    ('name', 'algos', 'steps'),
    [
        ('results_circle.yaml', {'SACALaM', 'SACLagNet', 'ASAC', 'SACALaMGA', 'SACFPI', 'SACLag', 'SACPID'}, 100_000),
        ('results_goal.yaml', {'SACALaM', 'SACLagNet', 'SACPID', 'SACLag'}, 200_000),
    ],
)
def test_the_results_grids_validate(name: str, algos: set, steps: int) -> None:
    from conftest import REPO

    runs = expand_grid(load_grid(REPO / 'examples' / name))
    check_runs(runs)
    assert len(runs) == 3 * len(algos) and {r.algo for r in runs} == algos
    assert all(r.total_steps == steps for r in runs)
    # the multiplier's rate comes from the budget (alam_cfgs.dual_rates), not from the grid
    assert all('multiplier_lr' not in r.custom_cfgs.get('alam_cfgs', {}) for r in runs)
    assert all('alam_cfgs' not in r.custom_cfgs for r in runs if r.algo in ('SACLag', 'SACPID', 'SACFPI'))


@pytest.mark.parametrize('name', sorted(p.name for p in (Path(__file__).parents[1] / 'examples').glob('*.yaml')))
def test_every_shipped_grid_gives_its_sac_algorithms_one_backbone(name: str) -> None:
    """The expanded config of every SAC-based run of a task (OmniSafe's defaults, its task
    section, the plugin's mirror of it and the grid's keys) has the same SAC backbone."""
    from conftest import REPO
    from omnisafe_alam.tools.grid import BACKBONE_KEYS, REWARD_CRITIC_KEYS, backbone, backbone_mismatches, run_cfgs

    runs = expand_grid(load_grid(REPO / 'examples' / name))
    assert backbone_mismatches(runs) == []
    sac = [r for r in runs if r.algo not in ('P3O', 'OnCRPO')]
    for env_id in {r.env_id for r in sac}:
        seen = {r.algo: backbone(run_cfgs(r)) for r in sac if r.env_id == env_id}
        assert len({json.dumps(b, sort_keys=True) for b in seen.values()}) == 1, seen
        assert set(next(iter(seen.values()))) >= set(BACKBONE_KEYS + REWARD_CRITIC_KEYS) - {'algo_cfgs:alpha'}


@pytest.mark.parametrize('name', sorted(p.name for p in (Path(__file__).parents[1] / 'examples').glob('*.yaml')))
def test_every_shipped_grid_gives_its_statewise_algorithms_one_constraint(name: str) -> None:
    """The state-wise family's runs of a task share ``d``, the step cost and ``F``'s discount, so
    the grid compares their multipliers alone (SafetyPointGoal1-v0's sections set
    ``cost_gamma`` 0.8 in all four YAMLs)."""
    from conftest import REPO
    from omnisafe_alam.tools.grid import STATEWISE, constraint, constraint_mismatches, run_cfgs

    runs = expand_grid(load_grid(REPO / 'examples' / name))
    assert constraint_mismatches(runs) == []
    for run in runs:
        if run.algo in STATEWISE:
            c = constraint(run_cfgs(run))
            expected = 0.8 if run.env_id == 'SafetyPointGoal1-v0' else 0.99
            assert c['derived:cost_gamma'] == pytest.approx(expected), (run.name, c)
            assert c['alam_cfgs:d'] == pytest.approx(0.1), (run.name, c)


def test_a_grid_whose_statewise_constraints_differ_is_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two state-wise algorithms whose built configs disagree on ``F``'s discount (SACLagNet
    given the paper's 0.99, SACALaM its section's 0.8) get one line naming the key and both
    values; the grid's shipped sections agree."""
    from omnisafe_alam.tools import grid as G

    grid = tmp_path / 'g.yaml'
    grid.write_text(
        'algo: [SACALaM, SACLagNet]\nenv_id: [SafetyPointGoal1-v0]\nseed: [0]\ntrain_cfgs:total_steps: [4000]\n',
        encoding='utf-8',
    )
    runs = expand_grid(load_grid(grid))
    assert G.constraint_mismatches(runs) == []
    real = G.run_cfgs

    def one_differs(run: G.GridRun) -> dict:
        cfgs = real(run).todict()
        if run.algo == 'SACLagNet':
            cfgs['alam_cfgs']['cost_gamma'] = 0.0
        return cfgs

    monkeypatch.setattr(G, 'run_cfgs', one_differs)
    (line,) = G.constraint_mismatches(runs)
    assert line == 'SafetyPointGoal1-v0: the state-wise constraint differs: cost_gamma: 0.8 (SACALaM) / 0.99 (SACLagNet)'


def test_a_grid_whose_backbones_differ_is_named_and_warned_about(tmp_path: Path) -> None:
    """OmniSafe tunes no section for the plugin's tasks: its SACLag there keeps its defaults
    (fixed temperature 0.2, lr 3e-4) against the plugin's task section, and the grid says so."""
    from omnisafe_alam.tools.grid import backbone_mismatches

    grid = tmp_path / 'g.yaml'
    grid.write_text(
        'algo: [SACALaM, SACLag]\nenv_id: [StatewiseBraking-v0]\nseed: [0]\ntrain_cfgs:total_steps: [4000]\n',
        encoding='utf-8',
    )
    (line,) = backbone_mismatches(expand_grid(load_grid(grid)))
    assert line.startswith('StatewiseBraking-v0: the SAC backbone differs: ')
    assert 'auto_alpha: True (SACALaM) / False (SACLag)' in line
    assert 'actor:lr: 0.001 (SACALaM) / 0.0003 (SACLag)' in line
    # the plugin's reward critics (normalised reward, LayerNorm) against OmniSafe's plain ones
    assert "reward_critic_layer_norm: True (SACALaM) / False (SACLag)" in line
    assert "reward_critic_target: '(1 - gamma) r / s' (SACALaM) / 'r' (SACLag)" in line
    out = run_cli([str(BIN / 'omnisafe-alam'), 'grid', str(grid), '--log-dir', str(tmp_path / 'runs'), '--dry-run'], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert 'WARNING: StatewiseBraking-v0: the SAC backbone differs' in out.stdout


def test_the_short_rate_companion_differs_from_the_circle_grid_only_in_its_rates() -> None:
    from conftest import REPO

    (main,) = [r for r in expand_grid(load_grid(REPO / 'examples' / 'results_circle.yaml'))
               if r.algo == 'SACALaM' and r.seed == 0]
    short = expand_grid(load_grid(REPO / 'examples' / 'results_circle_short_rates.yaml'))
    check_runs(short)
    assert [r.seed for r in short] == [0, 1] and short[0].total_steps == main.total_steps
    rates = {('model_cfgs', 'actor', 'lr'): 0.001, ('model_cfgs', 'critic', 'lr'): 0.001,
             ('alam_cfgs', 'm_lambda'): 20, ('alam_cfgs', 'multiplier_lr'): 0.001}

    def flat(tree: dict, prefix: tuple = ()) -> dict:
        out = {}
        for key, value in tree.items():
            out.update(flat(value, prefix + (key,)) if isinstance(value, dict) else {prefix + (key,): value})
        return out

    got, base = flat(short[0].custom_cfgs), flat(main.custom_cfgs)
    assert {k: got[k] for k in rates} == rates
    assert {k: v for k, v in got.items() if k not in rates} == {k: v for k, v in base.items() if k not in rates}


def test_ray_backend_without_ray_says_what_to_install(tmp_path: Path) -> None:
    """`--ray` where Ray cannot be imported: one line naming the install command, exit 2, before
    any run starts (a `ray` package that fails to import stands in for a missing one)."""
    shadow = tmp_path / 'shadow' / 'ray'
    shadow.mkdir(parents=True)
    (shadow / '__init__.py').write_text("raise ImportError('No module named ray')\n")
    grid = _write(tmp_path / 'g.yaml', _grid_text('SACALaM', 400))
    out = run_cli([str(BIN / 'omnisafe-alam'), 'grid', str(grid), '--log-dir', str(tmp_path / 'runs'), '--ray'],
                  cwd=tmp_path, PYTHONPATH=str(tmp_path / 'shadow'))
    assert out.returncode == 2, out.stdout[-2000:] + out.stderr[-2000:]
    (line,) = [line for line in out.stderr.splitlines() if line.startswith('error:')]
    assert "pip install 'omnisafe-alam[ray]'" in line
    assert not (tmp_path / 'runs').exists()
    out = run_cli([str(BIN / 'omnisafe-alam'), 'grid', str(grid), '--address', 'auto'], cwd=tmp_path)
    assert out.returncode == 2 and '--address is for --ray' in out.stderr
