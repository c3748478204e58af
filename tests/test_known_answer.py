"""The known-answer task: closed forms, the dual update without RL, and learning to the optimum."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import BIN, build_algo, run_cli
from omnisafe_alam.core import functional as F
from omnisafe_alam.envs.limit import (
    ENV_ID,
    SAC_BASELINE_CFGS,
    evaluate_policy,
    optimal_action,
    optimal_multiplier,
    optimal_return,
)
from omnisafe_alam.tools.runs import load_run, settled_at, stability_metrics, total_variation

D = 0.1


def test_closed_forms_by_hand() -> None:
    assert optimal_return(D) == pytest.approx(1.4375)  # 1 + (0.375 + 0.5) / 2
    assert optimal_return(0.0) == pytest.approx(1.36)  # k = 0.4: 1 + (0.64 / 2 + 0.4) / 2
    x = torch.tensor([-1.0, 0.0, 0.49, 0.51, 1.0])
    assert torch.allclose(optimal_action(x, D), torch.tensor([-0.5, 0.5, 0.99, 1.0, 1.0]))
    assert optimal_multiplier(x, D).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]


def test_evaluation_of_known_policies() -> None:
    best = evaluate_policy(lambda o: optimal_action(o, D), D)
    assert best['return_ratio'] == pytest.approx(1.0)
    assert best['violations'] == 0 and best['max_excess'] == pytest.approx(0.0, abs=1e-6)
    # the unconstrained optimum a = 1 has c = 0.6 - x: it exceeds d + 0.015 where x < 0.485,
    # i.e. on the grid points -1.00, -0.99, ..., 0.48: 149 of 201
    greedy = evaluate_policy(lambda o: torch.ones_like(o), D, tolerance=0.015)
    assert greedy['return'] == pytest.approx(2.0)
    assert greedy['violations'] == 149
    assert greedy['max_excess'] == pytest.approx(1.5)  # x = -1: c = 1 - (-0.6) = 1.6


def test_environment_through_omnisafe() -> None:
    from omnisafe.envs.core import make, support_envs

    import omnisafe_alam  # noqa: F401

    assert ENV_ID in support_envs()
    env = make(ENV_ID, num_envs=1)
    obs, _ = env.reset(options={'x': 0.0})
    assert obs.tolist() == [0.0]
    _, reward, cost, terminated, truncated, info = env.step(torch.tensor([0.7]))
    assert reward.item() == pytest.approx(1.7)
    assert cost.item() == pytest.approx(0.3)  # 0.7 - (0 + 0.4)
    assert terminated.item() and not truncated.item()
    assert info['final_observation'].tolist() == [0.0]
    vec = make(ENV_ID, num_envs=3)
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (3, 1)
    _, reward, cost, terminated, _, _ = vec.step(torch.full((3, 1), -1.0))
    assert reward.tolist() == [0.0, 0.0, 0.0] and cost.tolist() == [0.0, 0.0, 0.0]
    assert terminated.all()


def test_dual_cycles_track_the_projected_iterate_without_rl(tmp_path: Path) -> None:
    """Fixed residual field, no policy or critic updates: the real dual cycle of SACALaM must
    move lambda onto min(max(lambda_k + rho_k g, 0), multiplier_max) each cycle (the iterate
    reaches the cap 10 by the third cycle where g = 3), and rho must follow its schedule."""
    torch.manual_seed(0)
    algo = build_algo(
        'SACALaM',
        tmp_path,
        fill=2000,
        env_id=ENV_ID,
        alam_cfgs={'multiplier_lr': 3e-3, 'n_dual': 300, 'sigma': 1.5, 'rho_max': 3.0, 'rho_init': 1.0},
        algo_cfgs={'batch_size': 256},
    )
    # g < 0 for x < 1/4 and up to 3 above: large enough that v > 1/rho starts the schedule
    field = lambda obs: 4.0 * obs[..., 0] - 1.0  # noqa: E731
    algo._residual = field
    net = algo._actor_critic.multiplier
    grid = torch.linspace(-1.0, 1.0, 101).unsqueeze(-1)
    rho_seen = []
    for _cycle in range(3):
        rho = float(algo._dual.rho)
        with torch.no_grad():
            expected = F.dual_target(net(grid), field(grid), rho, algo._cfgs.alam_cfgs.multiplier_max)
        batch = algo._buf.sample_batch()['obs']
        with torch.no_grad():  # v^k on the cycle's batch with lambda^k, *before* the update
            v = F.violation_metric(net(batch), field(batch), rho)
        algo._dual_cycle(batch)
        with torch.no_grad():
            got = net(grid)
        error = (got - expected).abs().mean() / expected.abs().mean()
        assert error < 0.05, f'cycle {_cycle}: relative error {error:.3f}'
        assert algo._dual_stats['Metrics/Violation'] == pytest.approx(v, rel=1e-6)
        assert float(algo._dual.rho) == pytest.approx(F.penalty_step(rho, v, 1.5, 3.0))
        rho_seen.append(float(algo._dual.rho))
    # where g < 0 the iterate reaches the projected fixed point 0 (softplus: within 0.05)
    with torch.no_grad():
        low = net(grid[grid[:, 0] < -0.2])
    assert low.max() < 0.05
    # rho grew by sigma = 1.5 while v > 1/rho, up to the cap rho_max = 3
    assert rho_seen == pytest.approx([1.5, 2.25, 3.0])


def test_stability_metrics_by_hand() -> None:
    progress = pd.DataFrame(
        {
            'Metrics/MultiplierMean': [9.0, 9.0, 1.0, 2.0, 1.0, 3.0],  # second half: 2, 1, 3
            'Metrics/EpCost': [0.0, 0.0, 0.0, 1.0, 3.0, 2.0],  # second half: 1, 3, 2
        },
    )
    out = stability_metrics(progress)
    assert out['multiplier_tv'] == pytest.approx(3.0)  # |1-2| + |3-1|
    assert out['multiplier_tv_rel'] == pytest.approx(1.5)  # 3 / mean(2, 1, 3)
    assert out['ep_cost_tv'] == pytest.approx(3.0)  # |3-1| + |2-3|
    assert out['ep_cost_std'] == pytest.approx(math.sqrt(2 / 3))
    assert total_variation([5.0]) == 0.0


def test_settled_at_by_hand() -> None:
    steps = [2000.0, 4000.0, 6000.0, 8000.0, 10000.0]
    frame = pd.DataFrame({'TotalEnvSteps': steps, 'Metrics/EpCost': [40.0, 10.0, 30.0, 25.0, 5.0]})
    assert settled_at(frame, 25.0) == 8000.0  # 30 at 6000 is the last epoch above 25
    assert settled_at(frame, 4.0) != settled_at(frame, 4.0)  # the last epoch is above: never (NaN)
    assert settled_at(frame, 40.0) == 2000.0  # below from the first epoch on
    frame.loc[3, 'Metrics/EpCost'] = float('nan')  # an epoch without a finished episode counts as above
    assert settled_at(frame, 25.0) == 10000.0


def _train(algo: str, tmp_path: Path, extra: list[str], steps: int = 8000) -> Path:
    args = [
        str(BIN / 'omnisafe'), 'train', '--algo', algo, '--env-id', ENV_ID, '--total-steps', str(steps),
        '--torch-threads', '1', '--log-dir', str(tmp_path),
        '--custom-cfgs', 'logger_cfgs:use_tensorboard', '--custom-cfgs', 'False', *extra,
    ]
    # one thread: make test runs two test files at once on 2 cores, and two threads per run then
    # thrash (minutes instead of about 40 s); the timeout is generous for a loaded machine
    out = run_cli(args, cwd=tmp_path, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (run,) = (tmp_path / 'train').glob('*/seed-*')
    return run


def _deterministic(run: Path) -> dict:
    loaded = load_run(run)
    return evaluate_policy(lambda o: loaded.actor.predict(o, deterministic=True), D)


@pytest.mark.parametrize('reward_scale', [1000.0])
def test_sacalam_learns_the_optimal_safe_policy(tmp_path: Path, reward_scale: float) -> None:
    """The optimum with every reward 1000x the task's (env_cfgs.reward_scale): the reward
    critics learn a normalised reward (alam_cfgs.penalty_scale), so a huge reward changes
    nothing the policy and the multiplier learn. One scale is trained here: under the default
    penalty_scale a reward k times larger trains the same networks, which
    tests/test_reward_critic.py checks to 1e-5 at x0.01 and x1000 against x1."""
    # measured on seeds 0, 1, 2 before the penalty scale: return ratio 0.982-0.984, max excess
    # 0.017-0.026, multiplier 1.26-1.29 on active states and <= 0.004 on slack ones
    extra = ['--custom-cfgs', 'env_cfgs:reward_scale', '--custom-cfgs', str(reward_scale)]
    run = _train('SACALaM', tmp_path, extra)
    result = _deterministic(run)
    assert result['return_ratio'] >= 0.90, result
    assert result['max_excess'] <= 0.05, result  # no start state exceeds d by more than d/2
    loaded = load_run(run)
    x = torch.linspace(-1.0, 1.0, 201)
    with torch.no_grad():
        lam = loaded.multiplier(x.unsqueeze(-1))
    # the net's multiplier is in units of the penalty weight s (the reward's RMS): in the task's
    # own units it is lam * s / reward_scale, and lambda*(x) = 1[x < 0.5] there
    weight = float(pd.read_csv(run / 'progress.csv')['Metrics/PenaltyScale'].iloc[-1])
    raw = lam * weight / reward_scale
    active = optimal_multiplier(x, D).bool()
    # SAC's entropy lifts the active value a little above 1
    assert 0.8 <= float(raw[active].mean()) <= 2.0, (float(raw[active].mean()), weight)
    assert float(raw[~active].mean()) <= 0.2


def test_algd_is_safe_with_its_one_multiplier(tmp_path: Path) -> None:
    """ALGD (its Limit section: one gradient step per environment step, h = d = 0.1) ends
    safe from every start state, below SACALaM's return: its one scalar multiplier prices the
    constraint alike at every state, so slack states give up return too."""
    # measured, 8k steps: seed 0 return ratio 0.803, seed 1 0.829, no violating start, max excess
    # -0.085 / -0.075 (every state below d); at 4k (seed 0) 0.909 with 40 of 201 starts violating
    run = _train('ALGD', tmp_path, [])
    result = evaluate_policy(lambda o: load_run(run).actor.predict(o, deterministic=True), D)
    assert result['return_ratio'] >= 0.7, result
    assert result['violations'] == 0 and result['max_excess'] <= 0.05, result
    last = pd.read_csv(run / 'progress.csv').iloc[-1]
    assert last['Metrics/Lambda'] > 1.0, last['Metrics/Lambda']  # the price of the active states


def test_unconstrained_sac_violates(tmp_path: Path) -> None:
    extra = []
    for key, value in SAC_BASELINE_CFGS.items():
        extra += ['--custom-cfgs', key, '--custom-cfgs', value]
    # it violates long before 8k steps: measured at 3k, seeds 0 / 1: 36 / 72 of 201 start states
    # violate, max excess 0.37 / 0.74 (at 8k, seeds 0-2: 36-72, 0.37-0.75)
    result = _deterministic(_train('SAC', tmp_path, extra, steps=3000))
    assert result['violations'] >= 20 and result['max_excess'] >= 0.2, result


def test_a_run_infeasible_everywhere_says_so_in_its_log(tmp_path: Path) -> None:
    """d = 0 with a softplus cost head (F_hat > 0 everywhere): no state can be feasible, and the
    log says so, naming the numbers, once the span of alam_cfgs.infeasible_warning_steps passes."""
    args = [
        str(BIN / 'omnisafe'), 'train', '--algo', 'SACALaM', '--env-id', ENV_ID, '--total-steps', '1500',
        '--torch-threads', '1', '--log-dir', str(tmp_path),
        '--custom-cfgs', 'logger_cfgs:use_tensorboard', '--custom-cfgs', 'False',
        '--custom-cfgs', 'alam_cfgs:d', '--custom-cfgs', '0',
        '--custom-cfgs', 'alam_cfgs:infeasible_warning_steps', '--custom-cfgs', '300',
    ]
    out = run_cli(args, cwd=tmp_path, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    text = ' '.join((out.stdout + out.stderr).split())  # the console wraps long lines
    assert 'WARNING: no batch state has been feasible (F_hat <= d = 0.0)' in text, text[-3000:]
    # 1000 gradient steps: the first cycle at 20, warnings at 300 and 600 and 900 steps after it
    assert text.count('no batch state has been feasible') == 3, text[-3000:]
    progress = pd.read_csv(next((tmp_path / 'train').glob('*/seed-*')) / 'progress.csv')
    assert (progress['Metrics/FeasibleFrac'] == 0).all()
