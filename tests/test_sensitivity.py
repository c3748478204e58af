"""The branch lab: exact restores of the environment, and the summary's numbers by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from omnisafe.envs.core import make

from omnisafe_alam.tools.sensitivity import EnvSnapshot, _unwrap, horizon_for, summarize_branches


def test_summary_matches_hand_computed_values() -> None:
    # two states, three first actions (the policy's, against the slope, along it)
    f = np.array([[1.0, 0.0, 2.0], [3.0, 3.0, 3.0]])
    q = np.array([[1.0, 0.0, 2.0], [0.0, 1.0, 2.0]])
    s = summarize_branches(f, q)
    assert s['state_sd'] == pytest.approx(1.0)  # F at the policy's action: 1 and 3
    assert s['action_sd'] == pytest.approx(math.sqrt(1 / 3))  # within-state variances 2/3 and 0
    assert s['action_share'] == pytest.approx(0.25)
    assert s['best_gain'] == pytest.approx(0.5) and s['slope_gain'] == pytest.approx(0.5)
    assert s['random_gain'] == pytest.approx(0.0)  # the mean of 0 and 2 is the policy's 1
    assert s['against_minus_along'] == pytest.approx(-1.0)  # (0 - 2 + 3 - 3) / 2
    assert s['critic_pick_gain'] == pytest.approx(0.5)  # state 2: the critic picks the policy's
    assert s['state_corr'] == pytest.approx(-1.0) and s['action_corr'] == pytest.approx(1.0)
    assert s['varied_states'] == pytest.approx(0.5)
    with pytest.raises(ValueError, match='one shape'):
        summarize_branches(f[:, :2], q[:, :2])


def test_horizon_covers_the_largest_discount() -> None:
    assert horizon_for([0.8, 0.95]) == 90  # 0.95^90 < 0.01 <= 0.95^89
    assert 0.95**90 < 0.01 <= 0.95**89
    with pytest.raises(ValueError, match='in \\(0, 1\\)'):
        horizon_for([1.0])


def _trace(env, actions) -> np.ndarray:
    rows = []
    for a in actions:
        obs, reward, cost, term, trunc, _ = env.step(a)
        rows.append(np.concatenate([obs.numpy().ravel(), [float(reward), float(cost), float(term), float(trunc)]]))
    return np.stack(rows)


def test_snapshot_restores_safety_gymnasium_exactly_even_after_a_goal_is_met() -> None:
    """A branch that meets the goal moves it and advances the task's random state; the restore
    must undo both, so the same actions give the same observations, rewards and costs."""
    env = make('SafetyPointGoal1-v0', num_envs=1)
    env.reset(seed=5)
    # full speed with a slight turn: this layout's robot crosses a hazard on the way (13 costly steps)
    rng = np.random.default_rng(0)
    actions = [torch.tensor([1.0, 0.1 * rng.uniform(-1, 1)], dtype=torch.float32) for _ in range(400)]
    _trace(env, actions[:30])
    snap = EnvSnapshot(env)
    first = _trace(env, actions)
    assert first[:, -3].sum() > 0, 'the reference trace should meet a hazard'
    snap.restore()
    task = _unwrap(env)[1].task  # the branch: put the robot on the goal
    goal = task.goal.pos[:2].copy()
    for axis, name in enumerate(('x', 'y')):
        task.data.qpos[task.model.joint(name).qposadr[0]] += goal[axis] - task.agent.pos[axis]
    met = 0
    for a in actions[:20]:
        met += int(env.step(a)[-1].get('goal_met', False))
    assert met >= 1 and not np.allclose(task.goal.pos[:2], goal)
    snap.restore()
    assert np.array_equal(_trace(env, actions), first)
    snap.restore()
    assert np.array_equal(_trace(env, actions), first)


def test_snapshot_restores_a_plugin_task_exactly() -> None:
    env = make('StatewiseBraking-v0', num_envs=1)
    env.reset(seed=3)
    actions = [torch.tensor([v]) for v in np.linspace(-1, 1, 120)]
    _trace(env, actions[:7])
    snap = EnvSnapshot(env)
    first = _trace(env, actions)
    snap.restore()
    _trace(env, actions[::-1])
    snap.restore()
    assert np.array_equal(_trace(env, actions), first)


def test_snapshot_refuses_what_it_cannot_restore() -> None:
    with pytest.raises(TypeError, match='cannot snapshot'):
        EnvSnapshot(object())
