"""The off-policy adapter: true final states under Safety-Gymnasium's own auto-reset, calibration."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from conftest import build_algo
from omnisafe_alam.core import functional as F


class _Capture:
    """Stands in for the replay buffer and keeps every stored transition."""

    def __init__(self) -> None:
        self.rows: list[dict[str, torch.Tensor]] = []

    def store(self, **row: torch.Tensor) -> None:
        self.rows.append({k: v.clone() for k, v in row.items()})


def test_time_limit_transition_bootstraps_from_the_true_final_state(tmp_path: Path) -> None:
    """SafetyPointGoal1's 1000-step limit with one env: the stored next state must be the
    episode's own last state, not the first state of the next episode (issue: OmniSafe's
    AutoReset sits above the simulator's, so info['final_observation'] is a reset state)."""
    algo = build_algo('SACALaM', tmp_path, fill=1)
    env = algo._env  # noqa: SLF001
    infos: list[dict[str, Any]] = []
    step = env.step

    def spy(action: torch.Tensor) -> Any:
        out = step(action)
        infos.append(out[-1])
        return out

    env.step = spy  # type: ignore[method-assign]
    buffer = _Capture()
    env.rollout(1000, algo._actor_critic, buffer, algo._logger, use_rand_action=True)  # noqa: SLF001
    ends = [i for i, info in enumerate(infos) if 'final_info' in info]
    assert len(ends) == 1, 'expected exactly one time-limit end in 1000 steps (episode started at step 1)'
    i = ends[0]
    stored = buffer.rows[i]['next_obs'][0]
    true_final = torch.as_tensor(infos[i]['final_info']['final_observation'], dtype=torch.float32)
    wrong = infos[i]['final_observation'][0]
    assert torch.allclose(stored, true_final)
    assert not torch.allclose(stored, wrong)
    # physically: the true last state's lidar is a step away from the transition's, the reset
    # state's (another layout) is not. The lidar only: the first 12 entries are the
    # accelerometer, velocimeter, gyro and magnetometer, which a collision on the last step
    # makes jump (it did, with the SafetyPointGoal1-v0 section's backbone drawing other actions)
    obs = buffer.rows[i]['obs'][0]
    assert (stored[12:] - obs[12:]).norm() < (wrong[12:] - obs[12:]).norm()
    assert bool(buffer.rows[i]['done'][0]) is False  # a truncation is not terminal


def test_calibration_over_the_window(tmp_path: Path) -> None:
    algo = build_algo('SACALaM', tmp_path, fill=1, alam_cfgs={'calibration_window': 4})
    env = algo._env  # noqa: SLF001
    assert all(math.isnan(v) for v in env.calibration().values())  # no episode has ended yet
    env._calibration.clear()  # noqa: SLF001
    # (F_hat at the start, realised discounted cost); the first pair falls out of the window
    for pair in [(9.0, 0.0), (0.5, 0.0), (1.5, 1.0), (3.0, 2.0), (2.5, 4.0)]:
        env._calibration.append(pair)  # noqa: SLF001
    out = env.calibration()
    assert out['Calibration/StartFHat'] == pytest.approx(7.5 / 4)
    assert out['Calibration/StartCost'] == pytest.approx(7.0 / 4)
    assert out['Calibration/StartBias'] == pytest.approx(0.5 / 4)
    # ranks: predicted 1, 2, 4, 3; realised 1, 2, 3, 4 -> 1 - 6 * 2 / (4 * 15) = 0.8
    assert out['Calibration/StartRankCorr'] == pytest.approx(0.8)


def test_rank_correlation_by_hand() -> None:
    t = torch.tensor
    assert F.rank_correlation(t([1.0, 2.0, 3.0, 4.0]), t([10.0, 20.0, 20.0, 40.0])) == pytest.approx(
        4.5 / math.sqrt(5.0 * 4.5),  # ranks 1, 2.5, 2.5, 4 (a tie) against 1..4
    )
    assert F.rank_correlation(t([3.0, 2.0, 1.0]), t([1.0, 5.0, 9.0])) == pytest.approx(-1.0)
    assert math.isnan(F.rank_correlation(t([1.0, 2.0]), t([1.0, 2.0])))  # too few
    assert math.isnan(F.rank_correlation(t([1.0, 1.0, 1.0]), t([1.0, 2.0, 3.0])))  # no spread


def test_dual_cycles_wait_for_the_warmup_epochs_like_saclag(tmp_path: Path) -> None:
    """OmniSafe's SACLag updates its multiplier when epoch > warmup_epochs; so do we."""
    algo = build_algo('SACALaM', tmp_path, fill=1, alam_cfgs={'m_lambda': 10}, algo_cfgs={'warmup_epochs': 1})
    due = []
    for epoch in (0, 1, 2):
        algo._epoch = epoch  # noqa: SLF001
        for steps in (9, 10):
            algo._policy_steps = steps  # noqa: SLF001
            due.append(algo._dual_cycle_due())  # noqa: SLF001
    assert due == [False, False, False, False, False, True]


def test_true_final_state_is_normalised_like_the_others(tmp_path: Path) -> None:
    """With obs_normalize, the true final state gets the normaliser's transform, without being
    pushed into its statistics."""
    algo = build_algo('SACALaM', tmp_path, fill=50, algo_cfgs={'obs_normalize': True})
    env = algo._env  # noqa: SLF001
    normalizer = env.save()['obs_normalizer']
    count = normalizer._count  # noqa: SLF001
    raw = torch.arange(float(normalizer.mean.numel()))
    info = {'final_observation': torch.zeros(1, raw.numel()), 'final_info': {'final_observation': raw.numpy()}}
    got = env._true_final_obs(info, 0)  # noqa: SLF001
    assert torch.allclose(got, torch.clamp((raw - normalizer.mean) / normalizer.std, -5.0, 5.0))
    assert normalizer._count == count  # noqa: SLF001
    # without a final_info (vector envs, the plugin's own tasks) OmniSafe's value stands
    assert torch.equal(env._true_final_obs({'final_observation': torch.ones(1, 3)}, 0), torch.ones(3))  # noqa: SLF001


@pytest.mark.parametrize(('algo', 'expected'), [('SACALaM', 'both'), ('SACFPI', 'first')])
def test_realised_risk_matches_each_algorithms_risk_signal(tmp_path: Path, algo: str, expected: str) -> None:
    """F_hat is calibrated against the discounted (indicator) cost, FPI's CDF G against gamma^T
    of the first violation: costs 0, 0.5, 0, 2.0 give g + g^3 and g. The test task's sections
    (SafetyPointGoal1-v0) give the state-wise family F's discount 0.8; FPI keeps gamma 0.99."""
    inner = build_algo(algo, tmp_path, fill=1)
    env = inner._env  # noqa: SLF001
    env._reset_log()  # noqa: SLF001
    for cost in (0.0, 0.5, 0.0, 2.0):
        env._log_value(reward=torch.zeros(1), cost=torch.tensor([cost]), info={})  # noqa: SLF001
    g = 0.8 if expected == 'both' else inner._cfgs.algo_cfgs.gamma  # noqa: SLF001
    want = g + g**3 if expected == 'both' else g
    assert float(env._ep_disc_cost[0]) == pytest.approx(want)  # noqa: SLF001
    assert float(env._ep_unsafe[0]) == 2.0  # noqa: SLF001


def test_cost_gamma_discounts_the_cost_target_and_the_calibration(tmp_path: Path) -> None:
    """alam_cfgs.cost_gamma 0.5: the cost critics bootstrap with 0.5 (capped at cost_max / 0.5 = 2)
    and the realised counterpart of F_hat is sum_t 0.5^t c_t (costs 0, 1, 0, 1: 0.5 + 0.125)."""
    inner = build_algo('SACALaM', tmp_path, fill=1, alam_cfgs={'cost_gamma': 0.5, 'cost_max': 1.0})
    assert inner._cost_gamma == 0.5  # noqa: SLF001
    env = inner._env  # noqa: SLF001
    env._reset_log()  # noqa: SLF001
    for cost in (0.0, 1.0, 0.0, 1.0):
        env._log_value(reward=torch.zeros(1), cost=torch.tensor([cost]), info={})  # noqa: SLF001
    assert float(env._ep_disc_cost[0]) == pytest.approx(0.625)  # noqa: SLF001
    obs = torch.zeros(3, env.observation_space.shape[0])
    critic = inner._actor_critic.target_cost_critic  # noqa: SLF001
    with torch.no_grad():
        heads = [m for m in critic.modules() if isinstance(m, torch.nn.Linear) and m.out_features == 1]
        assert len(heads) == 2  # the twins' output layers
        for head in heads:
            head.weight.zero_()
            head.bias.fill_(3.0)  # softplus(3) = 3.0486 everywhere: above the cap of 2
    cost, done = torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 1.0])
    target = inner._cost_critic_target(cost, done, obs)[3]  # noqa: SLF001
    assert torch.allclose(target, torch.tensor([0.5 * 2.0, 1.0 + 0.5 * 2.0, 1.0]))
