"""Risk maps: real observations from the simulator state, and the command on a tiny run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import mujoco
import numpy as np
import pandas as pd
import pytest

from conftest import BIN, cli_tiny_args, run_cli
from omnisafe_alam.tools.riskmap import (
    ArenaProbe,
    Obstacle,
    RiskMapError,
    cost_free_mask,
    grid_observations,
    map_summary,
    riskmap,
)


def _agent_state(probe: ArenaProbe) -> tuple[float, ...]:
    task = probe.task
    x, y = task.agent.pos[:2]
    heading = float(np.arctan2(task.agent.mat[1, 0], task.agent.mat[0, 0]))
    twist = np.zeros(6)
    mujoco.mj_objectVelocity(task.model, task.data, mujoco.mjtObj.mjOBJ_BODY, task.model.body('agent').id, twist, 0)
    return float(x), float(y), heading, float(task.agent.vel[0]), float(task.agent.vel[1]), float(twist[2])


@pytest.mark.parametrize('env_id', ['SafetyPointGoal1-v0', 'SafetyPointCircle1-v0', 'SafetyPointButton1-v0'])
def test_point_observation_equals_the_environments_own(env_id: str) -> None:
    probe = ArenaProbe(env_id, layout_seed=5)
    rng = np.random.default_rng(0)
    for _ in range(30):  # drive somewhere, then coast one step so the agent is moving
        probe.env.step(rng.uniform(-1, 1, probe.env.action_space.shape))
    obs_env, *_ = probe.env.step(np.zeros(probe.env.action_space.shape))
    state = _agent_state(probe)
    assert np.hypot(state[3], state[4]) > 0.01  # a moving state, not only a resting one
    probe.observe(0.3, -0.4, 1.0, 0.5, 0.5)  # put it elsewhere first
    np.testing.assert_allclose(probe.observe(*state), obs_env, atol=1e-5)
    probe.close()


def test_car_observation_equals_the_environments_own_at_rest() -> None:
    # a car's wheels and suspension are not part of the map's state: compare a car at rest
    probe = ArenaProbe('SafetyCarGoal1-v0', layout_seed=7)
    obs_env, _ = probe.env.reset(seed=7)
    state = _agent_state(probe)
    probe.observe(0.3, -0.4, 1.0, 0.0, 0.0)
    np.testing.assert_allclose(probe.observe(*state), obs_env, atol=1e-5)
    probe.close()


def test_grid_lidar_sees_the_hazards() -> None:
    probe = ArenaProbe('SafetyPointGoal1-v0', layout_seed=0)
    xs, ys, obs = grid_observations(probe, 5, 0.0, (0.0, 0.0))
    assert obs.shape == (5, 5, 60) and len(xs) == len(ys) == 5
    hazard = next(o for o in probe.obstacles() if o.kind == 'hazards')
    near = probe.observe(hazard.x + 0.25, hazard.y, 0.0, 0.0, 0.0)
    far = probe.observe(-hazard.x * 0.2, -hazard.y * 0.2, 0.0, 0.0, 0.0)
    # the observation differs across the grid (lidar and all), not a constant fake feature
    assert np.abs(obs[0, 0] - obs[-1, -1]).max() > 0.1
    assert not np.allclose(near, far)
    probe.close()


def test_a_bearing_that_rounds_to_a_full_turn_is_observed() -> None:
    # At (-2, 0) facing 0 the agent's rotation matrix carries -2.8e-17, the circle's centre lies
    # at a bearing of -1e-17, `% 2 pi` rounds it to 2 pi and Safety-Gymnasium's lidar indexes bin
    # 16 of 16 (IndexError): every Circle map at heading 0 and an odd resolution crossed it.
    probe = ArenaProbe('SafetyPointCircle1-v0', layout_seed=0)
    obs = probe.observe(-2.0, 0.0, 0.0, 0.0, 0.0)
    beside = probe.observe(-2.0, 1e-4, 0.0, 0.0, 0.0)
    assert np.isfinite(obs).all()
    np.testing.assert_allclose(obs, beside, atol=1e-3)  # the map is continuous through the point
    xs, ys, grid = grid_observations(probe, 41, 0.0, (1.0, 0.0))
    assert grid.shape[:2] == (41, 41)
    probe.close()


def test_cost_free_mask_and_summary_by_hand() -> None:
    xs = np.array([-2.0, -1.0, 0.0, 1.0, 2.0])
    ys = np.array([0.0, 1.0])
    # walls at |x| = 1.5; a hazard of radius 0.5 at (0, 1): (0, 1) is inside, (1, 1) at distance 1 is not
    obstacles = [Obstacle('wall_x', 1.5, 0.0, 0.0), Obstacle('wall_x', -1.5, 0.0, 0.0),
                 Obstacle('hazards', 0.0, 1.0, 0.5), Obstacle('vases', 1.0, 0.0, 0.3)]
    free = cost_free_mask(xs, ys, obstacles)
    expected = np.array([[False, True, True, True, False], [False, True, False, True, False]])
    np.testing.assert_array_equal(free, expected)
    f_hat = np.array([[9.0, 0.05, 0.1, 0.3, 9.0], [9.0, 0.2, 0.0, 0.1, 9.0]])
    lam = np.array([[0.0, 1.0, 2.0, 3.0, 0.0], [0.0, 4.0, 99.0, 5.0, 0.0]])
    stats = map_summary({'F_hat': f_hat, 'lambda': lam}, free, threshold=0.1)
    # free: F_hat 0.05, 0.1, 0.3, 0.2, 0.1 -> 3 of 5 at or below d; lambda 1, 2, 3, 4, 5
    assert stats['cost_free_points'] == 5
    assert stats['feasible_share'] == pytest.approx(0.6)
    assert stats['lambda_q50'] == pytest.approx(3.0)
    assert stats['risk_median_free'] == pytest.approx(0.1)
    assert stats['risk_median_costly'] == pytest.approx(9.0)  # 9, 9, 9, 9 and 0.0 in the hazard
    assert stats['lambda_q10'] == pytest.approx(1.4)
    assert stats['lambda_q90'] == pytest.approx(4.6)
    assert np.isnan(map_summary({'lambda': lam}, free, 0.1)['feasible_share'])
    with pytest.raises(RiskMapError, match='no cost-free position'):
        map_summary({'F_hat': f_hat}, np.zeros_like(free), 0.1)


def test_circle_walls_bound_the_cost_free_positions() -> None:
    probe = ArenaProbe('SafetyPointCircle1-v0', layout_seed=0)
    walls = [ob for ob in probe.obstacles() if ob.kind.startswith('wall')]
    probe.close()
    assert sorted(ob.x for ob in walls) == pytest.approx([-1.125, 1.125])
    free = cost_free_mask(np.array([-1.2, -1.1, 0.0, 1.1, 1.2]), np.array([0.0, 5.0]), walls)
    np.testing.assert_array_equal(free, [[False, True, True, True, False]] * 2)


def test_unsupported_task_gets_a_clear_error(tmp_path: Path) -> None:
    run = tmp_path / 'run'
    run.mkdir()
    (run / 'config.json').write_text(json.dumps({'env_id': 'SafetyHalfCheetahVelocity-v1', 'algo': 'SACALaM'}))
    with pytest.raises(RiskMapError, match='makes sense for the navigation tasks'):
        riskmap([run], tmp_path / 'x.png')
    with pytest.raises(RiskMapError, match='no config.json'):
        riskmap([tmp_path], tmp_path / 'x.png')


def test_command_writes_a_png_from_a_tiny_run(tmp_path: Path) -> None:
    out = run_cli(cli_tiny_args('SACALaM') + ['--log-dir', str(tmp_path)], cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    (run,) = (tmp_path / 'train').glob('*/seed-*')
    png = tmp_path / 'map.png'
    out = run_cli(
        [str(BIN / 'omnisafe-alam'), 'riskmap', str(run), '--out', str(png), '--resolution', '9',
         '--velocity', '0,0', '--velocity', '1,0', '--heading', '0'],
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n' and png.stat().st_size > 20_000
    summary = pd.read_csv(tmp_path / 'map.csv')
    assert list(summary[['vx', 'vy']].itertuples(index=False, name=None)) == [(0.0, 0.0), (1.0, 0.0)]
    assert (summary['cost_free_points'] > 0).all() and summary['feasible_share'].between(0, 1).all()
    assert (summary['lambda_q10'] <= summary['lambda_q90']).all()
    assert 'feasible_share' in out.stdout
    out = run_cli([str(BIN / 'omnisafe-alam'), 'riskmap', str(run), '--out', str(tmp_path / 'only.png'),
                   '--resolution', '9', '--no-plot'], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert not (tmp_path / 'only.png').exists() and len(pd.read_csv(tmp_path / 'only.csv')) == 1
    bad = run_cli([str(BIN / 'omnisafe-alam'), 'riskmap', str(run), '--velocity', 'fast'], cwd=tmp_path)
    assert bad.returncode != 0 and 'vx,vy' in bad.stdout + bad.stderr
    # the steer lab on the same run: the policy's row and one step size's two rows, every figure a
    # number, the costs never negative; an earlier checkpoint is named as not the final one
    out = run_cli([str(BIN / 'omnisafe-alam'), 'steer', str(run), '--episodes', '1', '--eps', '0.5',
                   '--checkpoint', 'epoch-1.pt'], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'epoch-1.pt is not the final checkpoint (epoch-2.pt' in out.stderr
    rows = [line.split() for line in out.stdout.splitlines() if line.split()[:1] in (['policy'], ['critic'], ['random'])]
    assert [row[:-3] for row in rows] == [['policy'], ['critic', '0.5'], ['random', '0.5']], out.stdout
    for row in rows:
        ret, unsafe, f_hat = (float(v) for v in row[-3:])
        assert math.isfinite(ret) and 0.0 <= unsafe <= 1000.0 and f_hat >= 0.0, row
    bad = run_cli([str(BIN / 'omnisafe-alam'), 'steer', str(run), '--eps', '0'], cwd=tmp_path)
    assert bad.returncode == 2 and 'every --eps > 0' in bad.stderr
    # the branch lab on the same run: 3 states x 7 first actions, F inside [0, 1 / (1 - gamma)]
    table = tmp_path / 'branches.csv'
    out = run_cli([str(BIN / 'omnisafe-alam'), 'sensitivity', str(run), '--states', '3', '--stride', '50',
                   '--gamma', '0.8', '--out', str(table)], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'action_share' in out.stdout and 'slope_gain' in out.stdout
    branches = pd.read_csv(table)
    assert len(branches) == 3 * 7 and branches['f_mc_0.8'].between(0.0, 5.0).all()
    assert (branches['q_c'] >= 0).all() and (branches.loc[branches['candidate'] == 0, 'moved'] == 0).all()
    bad = run_cli([str(BIN / 'omnisafe-alam'), 'sensitivity', str(run), '--gamma', '1'], cwd=tmp_path)
    assert bad.returncode == 2 and 'every --gamma in (0, 1)' in bad.stderr
