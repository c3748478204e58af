"""The multi-step known-answer tasks: exact optima and feasible sets by hand, the envs in OmniSafe."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from omnisafe_alam.envs import braking as B
from omnisafe_alam.envs import detour as D
from omnisafe_alam.tools.known_answer import TASK_SPECS, score_classification

GAMMA, DTOL = 0.99, 0.1


# ------------------------------------------------------------------ StatewiseBraking-v0
def test_braking_feasible_set_by_hand() -> None:
    # from v = 1 full braking covers 0.1 * (0.9 + 0.8 + ... + 0.1) = 0.45: x = 0.55 is the edge
    edge = B.feasibility_margin(torch.tensor([[0.55, 1.0], [0.56, 1.0], [0.54, 1.0]]))
    assert edge[0].item() == pytest.approx(0.0, abs=1e-6)
    assert edge[1].item() == pytest.approx(-0.01, abs=1e-6) and edge[2].item() == pytest.approx(0.01, abs=1e-6)
    # (0.99, 0.25): braking gives v = 0.15, 0.05, -0.05, -0.15 and x = 1.005, 1.01, 1.005 (three
    # hazard steps), 0.99: F* = 1 + gamma + gamma^2. A state at rest before the hazard has F* = 0.
    f_star = B.min_discounted_cost(torch.tensor([[0.99, 0.25], [0.9, 0.0]]), GAMMA)
    assert f_star.tolist() == pytest.approx([1 + GAMMA + GAMMA**2, 0.0], abs=1e-5)
    # on the scoring grid, F* <= d is exactly margin >= 0, and infeasible states are far above d
    grid = TASK_SPECS[B.ENV_ID].state_grid
    margin, f_star = B.feasibility_margin(grid), B.min_discounted_cost(grid, GAMMA)
    assert torch.equal(f_star <= DTOL, margin >= 0)
    assert f_star[margin < 0].min() > 0.8
    assert 0.15 < (margin < 0).float().mean() < 0.5  # both classes well represented


def test_braking_optimum_is_attained_and_unconstrained_violates() -> None:
    starts = TASK_SPECS[B.ENV_ID].start_states
    assert (B.feasibility_margin(starts) >= 0.4).all()  # every start state is feasible
    assert B.optimal_return(torch.tensor([[0.2, 0.3]])).item() == pytest.approx(8.0)  # (1 - 0.2) / 0.1
    for x0, v0 in starts.tolist():
        plan = B.parking_plan(x0, v0)
        assert len(plan) <= B.HORIZON and max(abs(a) for a in plan) <= 1.0
        x, v = torch.tensor(x0, dtype=torch.float64), torch.tensor(v0, dtype=torch.float64)
        farthest = x
        for a in plan:
            x, v = B.step_dynamics(x, v, torch.tensor(a, dtype=torch.float64))
            farthest = torch.maximum(farthest, x)
        assert x.item() == pytest.approx(B.X_HAZARD, abs=1e-9) and v.item() == pytest.approx(0.0, abs=1e-9)
        assert farthest.item() <= B.X_HAZARD + 1e-12
    # the unconstrained optimum (full throttle) earns more and violates from every start
    greedy = B.simulate(lambda s: torch.ones(len(s), 1), starts, GAMMA)
    assert (greedy['return'] > B.optimal_return(starts)).all()
    assert (greedy['discounted_cost'] > DTOL).all()


# ------------------------------------------------------------------ StatewiseDetour-v0
def test_detour_feasible_set_by_hand() -> None:
    # (0.925, -0.05): one step to the box, up-slack -0.05 + 0.1 - 0.1 < 0 (no way under the box)
    # (0.825, -0.05): two steps, up-slack 0.05; past the box (x + dt > 2): always feasible
    margin = D.feasibility_margin(torch.tensor([[0.925, -0.05], [0.825, -0.05], [1.95, -0.3]]))
    assert margin[0].item() == pytest.approx(-0.05, abs=1e-6)
    assert margin[1].item() == pytest.approx(0.05, abs=1e-6)
    assert margin[2].item() == float('inf')
    spec = TASK_SPECS[D.ENV_ID]
    assert (D.feasibility_margin(spec.start_states) >= 0.2).all()  # worst: (0.275, -0.5)
    assert 0.3 < (D.feasibility_margin(spec.state_grid) < 0).float().mean() < 0.6


def test_detour_optimum_by_hand_and_attained() -> None:
    # start (0.025, 0): 30 steps; the box is steps 10..19, where |y| = 0.1: 30 - 2 * 1.0 = 28
    # start (0.025, -0.5): |y| = 0.4, 0.3, 0.2, 0.1 on the way up, 0.1 on the box: 30 - 2 * 2.0
    best = D.optimal_return(torch.tensor([[0.025, 0.0], [0.025, -0.5]]))
    assert best.tolist() == pytest.approx([28.0, 26.0])
    starts = TASK_SPECS[D.ENV_ID].start_states
    path = D.optimal_path(starts)
    # follow the optimal path open-loop through the env's own dynamics
    env = D.StatewiseDetourEnv(D.ENV_ID, num_envs=len(starts))
    state, ret, cost = starts.clone(), torch.zeros(len(starts)), torch.zeros(len(starts))
    for t in range(path.shape[0]):
        alive = ~torch.isnan(path[t])
        act = ((torch.nan_to_num(path[t]) - state[:, 1].double()) / D.DT).float().clamp(-1, 1)
        state, reward, step_cost, _ = env._transition(state, act.unsqueeze(-1))  # noqa: SLF001
        ret, cost = ret + reward * alive, cost + step_cost * alive
    assert torch.allclose(ret, D.optimal_return(starts), atol=1e-4)
    assert cost.max() == 0
    # the unconstrained optimum heads for y = 0, through the box: it violates from every start
    greedy = D.simulate(lambda s: (-s[:, 1:] / D.DT).clamp(-1, 1), starts, GAMMA)
    assert (greedy['discounted_cost'] > DTOL).all()


# ------------------------------------------------------------------ both, through OmniSafe
@pytest.mark.parametrize('env_id', [B.ENV_ID, D.ENV_ID])
def test_tasks_through_omnisafe(env_id: str) -> None:
    from omnisafe.envs.core import make, support_envs

    import omnisafe_alam  # noqa: F401

    assert env_id in support_envs()
    env = make(env_id, num_envs=2)
    start = torch.tensor([[0.2, 0.1], [0.1, 0.2]])
    obs, _ = env.reset(options={'state': start})
    assert torch.equal(obs, start)
    last = None
    for step in range(env.max_episode_steps):
        obs, _, _, terminated, truncated, info = env.step(torch.zeros(2, 1))
        if (terminated | truncated).any():
            last = step
            break
    assert last is not None and last + 1 <= env.max_episode_steps
    # the final observation is the true last state, the returned one a fresh start state
    assert not torch.equal(info['final_observation'], obs)
    assert (TASK_SPECS[env_id].margin(obs) >= 0).all()


def test_classification_score_by_hand() -> None:
    f_hat = torch.tensor([0.0, 0.05, 0.5, 2.0, 0.08])
    feasible = torch.tensor([True, True, True, False, False])
    out = score_classification(f_hat, feasible, d=0.1)
    # predicted feasible: T T F F T -> right on 0, 1, 3: 3 of 5
    assert out['accuracy'] == pytest.approx(0.6)
    assert out['false_unsafe'] == pytest.approx(1 / 3)
    assert out['false_safe'] == pytest.approx(0.5)
    # infeasible F_hat 2.0 beats all three feasible ones, 0.08 beats two (0.0, 0.05), not 0.5
    assert out['auc'] == pytest.approx((3 + 2) / 6)


def test_monte_carlo_f_by_hand() -> None:
    """The rollout estimate of a policy's own F (no time limit, stops at termination)."""
    from omnisafe_alam.tools.known_answer import monte_carlo_f

    g = 0.99
    # Braking, full throttle from rest at 0: x_t = 0.005 t (t + 1) first exceeds 1 at t = 14
    # (210 * 0.005 = 1.05), i.e. the step t = 13 costs, and every later step (the wall at 3
    # holds the point): F = (g^13 - g^400) / (1 - g)
    start = torch.tensor([[0.0, 0.0]])
    throttle = monte_carlo_f(B.StatewiseBrakingEnv, lambda s: torch.ones(len(s), 1), start, g)
    assert float(throttle) == pytest.approx((g**13 - g**400) / (1 - g), rel=1e-4)
    # full braking is the safest policy: its F is F* on the whole scoring grid (in float64, as F*
    # is computed: many grid states come to rest exactly on x = 1)
    grid = TASK_SPECS[B.ENV_ID].state_grid.double()
    brake = monte_carlo_f(B.StatewiseBrakingEnv, lambda s: -torch.ones(len(s), 1, dtype=s.dtype), grid, g)
    assert torch.allclose(brake.float(), B.min_discounted_cost(grid, g), atol=1e-4)
    # Detour, straight ahead at y = 0 from x = 0.025: x_{t+1} = 0.025 + 0.1 (t + 1) is in the box
    # [1, 2] for t = 9..18; the episode terminates at x >= 3 (t = 29), so F = (g^9 - g^19) / (1 - g)
    ahead = monte_carlo_f(D.StatewiseDetourEnv, lambda s: torch.zeros(len(s), 1), torch.tensor([[0.025, 0.0]]), g)
    assert float(ahead) == pytest.approx((g**9 - g**19) / (1 - g), rel=1e-5)
    # SAC-FPI's CDF of the same rollouts: only the first violation counts, decayed by its step
    first = monte_carlo_f(D.StatewiseDetourEnv, lambda s: torch.zeros(len(s), 1), torch.tensor([[0.025, 0.0]]), g, kind='first_cost_decay')
    assert float(first) == pytest.approx(g**9, rel=1e-6)
    first = monte_carlo_f(B.StatewiseBrakingEnv, lambda s: torch.ones(len(s), 1), start, g, kind='first_cost_decay')
    assert float(first) == pytest.approx(g**13, rel=1e-6)
    # a policy that never violates: 0 under both
    assert float(monte_carlo_f(B.StatewiseBrakingEnv, lambda s: -torch.ones(len(s), 1), start, g, kind='first_cost_decay')) == 0.0
    with pytest.raises(ValueError, match='first_cost_decay'):
        monte_carlo_f(B.StatewiseBrakingEnv, lambda s: -torch.ones(len(s), 1), start, g, kind='cdf')


# ------------------------------------------------------------------ short training, each task
@pytest.mark.parametrize(
    ('env_id', 'steps', 'min_return_ratio', 'min_accuracy'),
    # measured at 6k steps, seed 0 (deterministic on a given machine), 2-core machine, before the
    # normalised reward critics: Braking return ratio 0.819, accuracy 0.974, AUC 0.996, policy's
    # own F accuracy 0.974, multiplier near the boundary 3.4 against 0.001 deep inside; Detour
    # 0.823, 0.764, 0.999, 0.983, 9.4 against 1.44; no violating start state on either. With the
    # normalised reward critics with LayerNorm (penalty_scale: normalize) Braking at 6k violated
    # from all 54 start states (the critics' random initial output, of the size of their values
    # in that unit, still dominated the actor after 4k gradient steps); at 10k: 0.915, accuracy
    # 0.930, AUC 0.999, own-F accuracy 0.933, multiplier 3.7 near the boundary against 0.000
    # deep inside, no violating start (docs/known_answer.md). Detour still passes at 6k.
    [(B.ENV_ID, 10000, 0.7, 0.85), (D.ENV_ID, 6000, 0.7, 0.65)],
)
def test_sacalam_short_run_learns_safe_return_and_risk(
    tmp_path, env_id: str, steps: int, min_return_ratio: float, min_accuracy: float,
) -> None:
    """6k-10k steps of SACALaM with the task's YAML section: most of the optimal safe return with no
    violating start state, F_hat <= d already close to the exact feasible set, the multiplier
    higher near the boundary than deep inside, and every run logs the calibration figures."""
    import pandas as pd

    from conftest import BIN, run_cli
    from omnisafe_alam.tools.known_answer import evaluate_run

    args = [
        str(BIN / 'omnisafe'), 'train', '--algo', 'SACALaM', '--env-id', env_id, '--total-steps', str(steps),
        '--torch-threads', '1', '--log-dir', str(tmp_path),
        '--custom-cfgs', 'logger_cfgs:use_tensorboard', '--custom-cfgs', 'False',
    ]
    out = run_cli(args, cwd=tmp_path, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    (run,) = (tmp_path / 'train').glob('*/seed-*')
    row = evaluate_run(run)
    assert row['violating_starts'] == 0, row
    assert row['return_ratio'] >= min_return_ratio, row
    assert row['auc'] >= 0.95 and row['accuracy'] >= min_accuracy, row
    assert row['mc_accuracy'] >= 0.9, row
    assert row['lam_finite'] and row['lam_max'] <= 10.0, row
    # near the boundary at least twice deep inside. With the slope cap, seed 0: above 3x on the
    # machine the cap was measured on, 9.49 / 3.28 (2.9x) on another 2-core machine with the
    # same code and packages (the 6k run is not bit-identical across CPUs, and at 6k steps the
    # deep multiplier is still decaying: 0.000-0.67 at 40k, docs/known_answer.md)
    assert row['lam_near'] >= 1.0 and row['lam_near'] > 2 * row['lam_deep'], row
    if env_id == B.ENV_ID:
        _assert_cost_slope_steers_to_safety(run)
    progress = pd.read_csv(run / 'progress.csv')
    for key in ('Calibration/StartBias', 'Calibration/StartRankCorr', 'Metrics/MultiplierQ90', 'Metrics/FeasibleFrac'):
        assert key in progress, key
    assert math.isfinite(progress['Calibration/StartFHat'].iloc[-1])


def _assert_cost_slope_steers_to_safety(run: Path) -> None:
    """The penalty reaches the actor only through the cost critics' action slope: on Braking it
    must point away from the hazard. The trained policy pushed 0.6 toward the hazard violates;
    steps of 0.25 against the slope must make it safe, steps of 0.25 in random directions must
    not (omnisafe_alam.tools.steer). Measured, seed 0, 10 episodes: 21.4 unsafe steps per
    episode pushed, 0.0 steered by the slope, 20.4 by random steps; a 10k run with the reward
    x10 and `penalty_scale: none`: 10.2 / 0.0 / 11.9."""
    from omnisafe.envs.core import make

    from omnisafe_alam.tools.runs import load_run
    from omnisafe_alam.tools.steer import steer_rollouts

    loaded = load_run(run)
    env = make(loaded.env_id, num_envs=1)
    pushed = steer_rollouts(loaded, env, 10, 0.0, 'critic', bias=0.6)
    steered = steer_rollouts(loaded, env, 10, 0.25, 'critic', bias=0.6)
    control = steer_rollouts(loaded, env, 10, 0.25, 'random', bias=0.6)
    assert pushed.unsafe_steps >= 5.0, (pushed, 'the positive control must make the policy unsafe')
    assert steered.unsafe_steps <= 0.2 * pushed.unsafe_steps, (pushed, steered)
    assert control.unsafe_steps >= 0.5 * pushed.unsafe_steps, (pushed, control)
    assert steered.f_hat < control.f_hat, (steered, control)
    # the same slope on branches of the environment (omnisafe_alam.tools.sensitivity): one first
    # action moved 0.5 against it must lower the realised F far more than a move in no particular
    # direction, and the critics must rank a state's first actions as F does. Measured, seed 0,
    # 50 states: slope 1.07 against random 0.13, within-state correlation 0.87 (100: 1.005,
    # 0.054, 0.92).
    from omnisafe_alam.tools.sensitivity import branch_feasibility, summarize_branches

    data = branch_feasibility(loaded, env, 50, (0.99,), eps=0.5, bias=0.6)
    summary = summarize_branches(data.f_mc[:, :, 0], data.q_c)
    assert summary['varied_states'] >= 0.3, summary
    assert summary['slope_gain'] >= 4 * max(summary['random_gain'], 0.02), summary
    assert summary['action_corr'] >= 0.5, summary


def test_known_answer_example_gives_sac_the_task_sections() -> None:
    """OmniSafe's SAC has no YAML section for the plugin's tasks: the example hands it the same
    networks and budget as the plugin's section (and parses the Limit task's CLI pairs)."""
    import importlib.util

    from conftest import REPO

    spec = importlib.util.spec_from_file_location('known_answer_example', REPO / 'examples' / 'known_answer.py')
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    cfgs = module.sac_baseline_cfgs(B.ENV_ID)
    assert cfgs['model_cfgs']['actor']['hidden_sizes'] == [64, 64]
    assert cfgs['algo_cfgs']['start_learning_steps'] == 2000 and cfgs['algo_cfgs']['auto_alpha'] is True
    limit = module.sac_baseline_cfgs('StatewiseLimit-v0')
    assert limit['algo_cfgs']['batch_size'] == 128 and limit['model_cfgs']['actor']['lr'] == pytest.approx(1e-3)
    assert limit['algo_cfgs']['auto_alpha'] is True


@pytest.mark.parametrize('cost_gamma', [0.0, 0.99, 0.9])
def test_scoring_refuses_another_feasibility_discount(tmp_path, cost_gamma: float) -> None:
    """The tasks' exact feasible sets are ``F* <= d`` at ``algo_cfgs.gamma``: a run whose ``F`` has
    another discount (``alam_cfgs.cost_gamma``) is refused by name before any network is read;
    0 (the reward's) and the reward's own value itself are scored."""
    from omnisafe_alam.tools.known_answer import evaluate_loaded
    from omnisafe_alam.tools.runs import LoadedRun

    class Unread:  # a network the refusal must not touch
        def __getattr__(self, name: str) -> None:
            raise AssertionError(f'the network was read ({name})')

        def __call__(self, *args: object) -> None:
            raise AssertionError('the network was called')

    cfgs = {'algo': 'SACALaM', 'env_id': B.ENV_ID, 'seed': 0, 'algo_cfgs': {'gamma': GAMMA},
            'alam_cfgs': {'d': DTOL, 'cost_gamma': cost_gamma}}
    run = LoadedRun(tmp_path, cfgs, tmp_path / 'x.pt', Unread(), None, None, None)
    if cost_gamma in (0.0, GAMMA):
        with pytest.raises(AssertionError, match='network was'):
            evaluate_loaded(run)
    else:
        with pytest.raises(ValueError, match=r'algo_cfgs.gamma=0.99 only.*cost_gamma=0.9'):
            evaluate_loaded(run)


def test_steer_rollouts_refuse_what_they_cannot_measure() -> None:
    """A run without twin cost critics, an unknown direction or a negative step are refused by name."""
    from types import SimpleNamespace

    from omnisafe_alam.tools.steer import steer_rollouts

    no_critic = SimpleNamespace(cost_critic=None, run_dir='RUN', algo='SACFPI')
    with pytest.raises(ValueError, match='SACFPI.*no twin cost critics'):
        steer_rollouts(no_critic, None, 1, 0.1)
    critic = SimpleNamespace(cost_critic=object(), run_dir='RUN', algo='SACALaM')
    with pytest.raises(ValueError, match="'critic' or 'random'"):
        steer_rollouts(critic, None, 1, 0.1, direction='uphill')
    with pytest.raises(ValueError, match='eps >= 0'):
        steer_rollouts(critic, None, 1, -0.1)
