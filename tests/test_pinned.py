"""The algorithm's own update code pinned to hand-computed values on tiny fixed networks.

``test_functional.py`` checks the formulas; these check that the class assembles them: the
cost-critic step, the K-sample F_hat, the policy loss, the Polyak step and the dual cadence run
through ``SACALaM``'s real methods, with its networks replaced by linear "twins" whose weights
are set by hand (state and action are 1-D on ``StatewiseLimit-v0``), so every number below
follows from a few multiplications written in the comments.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import build_algo

LIMIT = 'StatewiseLimit-v0'
T = torch.tensor


class LinearTwin(nn.Module):
    """``q_i(x, a) = w_i0 x + w_i1 a + b_i`` for i = 1, 2 (OmniSafe's critic interface)."""

    def __init__(self, weight: list[list[float]], bias: list[float]) -> None:
        super().__init__()
        self.weight = nn.Parameter(T(weight))
        self.bias = nn.Parameter(T(bias))

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> list[torch.Tensor]:
        inp = torch.cat([obs, act], dim=-1)
        return [inp @ self.weight[i] + self.bias[i] for i in range(2)]


@pytest.fixture()
def algo(tmp_path: Path):  # noqa: ANN201
    inner = build_algo('SACALaM', tmp_path, fill=1, env_id=LIMIT, alam_cfgs={'m_lambda': 10, 'cost_indicator': True})
    ac = inner._actor_critic
    ac.cost_critic = LinearTwin([[1.0, 2.0], [0.5, -1.0]], [0.0, 0.1])
    ac.target_cost_critic = LinearTwin([[0.2, 0.4], [0.6, 0.0]], [0.1, 0.3]).requires_grad_(False)
    ac.cost_critic_optimizer = torch.optim.SGD(ac.cost_critic.parameters(), lr=0.1)
    return inner


def test_cost_critic_step_by_hand(algo) -> None:  # noqa: ANN001
    """Target, loss and SGD step of ``_update_cost_critic`` (indicator cost, twins' mean target)."""
    # next actions a' (one sample per state): 0.5 and -1
    algo._f_actions = lambda obs: T([[[0.5], [-1.0]]])  # noqa: SLF001
    obs, act = T([[0.5], [-1.0]]), T([[0.2], [1.0]])
    cost, done, next_obs = T([0.0, 0.3]), T([0.0, 1.0]), T([[1.0], [0.0]])
    # target critics at (x', a'): state 1 (1, 0.5): 0.2 + 0.2 + 0.1 = 0.5 and 0.6 + 0.3 = 0.9,
    # mean 0.7; state 2 is terminal. Indicator costs [0, 1]:
    # y = [0 + 0.99 * 0.7, 1 + 0] = [0.693, 1]
    # critics at (x, a): q1 = [0.5 + 0.4, -1 + 2] = [0.9, 1.0]; q2 = [0.25 - 0.2 + 0.1, -0.5 - 1 + 0.1]
    # = [0.15, -1.4]
    # loss = mean((q1 - y)^2) + mean((q2 - y)^2)
    #      = (0.207^2 + 0) / 2 + (0.543^2 + 2.4^2) / 2 = 0.0214245 + 3.0274245 = 3.048849
    algo._update_cost_critic(obs, act, cost, done, next_obs)  # noqa: SLF001
    stored = algo._logger._data['Loss/Loss_cost_critic'][-1]  # noqa: SLF001
    assert stored == pytest.approx(3.048849, rel=1e-5)
    # gradients (B = 2): dL/dw_1 = (q1 - y) . [x, a] = 0.207 * [0.5, 0.2] + 0 = [0.1035, 0.0414]
    # dL/db_1 = 0.207; dL/dw_2 = -0.543 * [0.5, 0.2] + (-2.4) * [-1, 1] = [2.1285, -2.5086]
    # dL/db_2 = -0.543 - 2.4 = -2.943; SGD lr 0.1 (norm 4.5 < 40: no clipping)
    net = algo._actor_critic.cost_critic  # noqa: SLF001
    assert torch.allclose(net.weight, T([[1 - 0.01035, 2 - 0.00414], [0.5 - 0.21285, -1 + 0.25086]]), atol=1e-6)
    assert torch.allclose(net.bias, T([0 - 0.0207, 0.1 + 0.2943]), atol=1e-6)


def test_cost_critic_regresses_at_the_smoothed_action(algo) -> None:  # noqa: ANN001
    """``alam_cfgs.cost_critic_action_noise``: the critics regress at ``clip(a + sigma xi, -1, 1)``,
    the target that of the stored action (the same y as the step above)."""
    algo._f_actions = lambda obs: T([[[0.5], [-1.0]]])  # noqa: SLF001
    obs, act = T([[0.5], [-1.0]]), T([[0.2], [1.0]])
    cost, done, next_obs = T([0.0, 0.3]), T([0.0, 1.0]), T([[1.0], [0.0]])
    algo._cost_action_noise = 0.5  # noqa: SLF001
    torch.manual_seed(3)
    xi = torch.randn_like(act)
    smooth = (act + 0.5 * xi).clamp(-1.0, 1.0)
    assert not torch.allclose(smooth, act)
    y = T([0.693, 1.0])
    q1 = 1.0 * obs[:, 0] + 2.0 * smooth[:, 0]
    q2 = 0.5 * obs[:, 0] - 1.0 * smooth[:, 0] + 0.1
    expected = float(((q1 - y) ** 2).mean() + ((q2 - y) ** 2).mean())
    torch.manual_seed(3)
    algo._update_cost_critic(obs, act, cost, done, next_obs)  # noqa: SLF001
    stored = algo._logger._data['Loss/Loss_cost_critic'][-1]  # noqa: SLF001
    assert stored == pytest.approx(expected, rel=1e-5)
    assert stored != pytest.approx(3.048849, rel=1e-3)  # the stored action's loss


def test_cost_critic_loss_with_softplus_floor_by_hand(algo) -> None:  # noqa: ANN001
    """The same step with a softplus head and a logit floor of -1: MSE of the softplus outputs
    plus the floor penalty (only q2's second pre-activation, -1.4, is below -1)."""
    from omnisafe_alam.core.models import NonNegativeCritic

    ac = algo._actor_critic  # noqa: SLF001
    ac.cost_critic = NonNegativeCritic(ac.cost_critic)
    algo._cost_logit_floor = -1.0  # noqa: SLF001
    algo._f_actions = lambda obs: T([[[0.5], [-1.0]]])  # noqa: SLF001
    obs, act = T([[0.5], [-1.0]]), T([[0.2], [1.0]])
    cost, done, next_obs = T([0.0, 0.3]), T([0.0, 1.0]), T([[1.0], [0.0]])
    # pre-activations as above: z1 = [0.9, 1.0], z2 = [0.15, -1.4]; targets y = [0.693, 1] (the
    # linear target critics); outputs softplus(z) = log(1 + e^z)
    sp = [math.log1p(math.exp(z)) for z in (0.9, 1.0, 0.15, -1.4)]
    mse = ((sp[0] - 0.693) ** 2 + (sp[1] - 1) ** 2) / 2 + ((sp[2] - 0.693) ** 2 + (sp[3] - 1) ** 2) / 2
    # floor penalty: twin 2 only, (-1 - (-1.4))^2 / B = 0.16 / 2 = 0.08
    algo._update_cost_critic(obs, act, cost, done, next_obs)  # noqa: SLF001
    stored = algo._logger._data['Loss/Loss_cost_critic'][-1]  # noqa: SLF001
    assert stored == pytest.approx(mse + 0.08, rel=1e-5)
    # the fused path (both critics in one backward, what training runs), from the same weights
    ac.cost_critic = NonNegativeCritic(LinearTwin([[1.0, 2.0], [0.5, -1.0]], [0.0, 0.1]))
    ac.cost_critic_optimizer = torch.optim.SGD(ac.cost_critic.parameters(), lr=0.1)
    algo._update_critics(obs, act, T([0.0, 0.0]), cost, done, next_obs)  # noqa: SLF001
    assert algo._logger._data['Loss/Loss_cost_critic'][-1] == pytest.approx(mse + 0.08, rel=1e-5)  # noqa: SLF001


def test_cost_critic_bounded_slope_step_by_hand(algo) -> None:  # noqa: ANN001
    """The same step with a softplus head, no floor, and ``cost_critic_min_slope`` 1 (the matching
    loss), 0.3 and 0 (the MSE, the default). The logged loss is the MSE each time; the
    matching step moves each twin's bias by lr x the sum of its errors (2/B = 1), the MSE step by
    the errors times the head's slope sigmoid(z), 0.3 by max(sigmoid(z), 0.3): the MSE's step but
    for q2's second sample, whose slope sigmoid(-1.4) = 0.198 is raised to 0.3."""
    from omnisafe_alam.core.models import NonNegativeCritic

    obs, act = T([[0.5], [-1.0]]), T([[0.2], [1.0]])
    cost, done, next_obs = T([0.0, 0.3]), T([0.0, 1.0]), T([[1.0], [0.0]])
    algo._f_actions = lambda obs: T([[[0.5], [-1.0]]])  # noqa: SLF001
    algo._cost_logit_floor = -math.inf  # noqa: SLF001
    # as above: z1 = [0.9, 1.0], z2 = [0.15, -1.4], y = [0.693, 1]
    zs, y = ((0.9, 1.0), (0.15, -1.4)), (0.693, 1.0)
    sp = lambda z: math.log1p(math.exp(z))  # noqa: E731
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    mse = sum((sp(z) - t) ** 2 for twin in zs for z, t in zip(twin, y)) / 2
    assert algo._cost_min_slope == 0.0  # noqa: SLF001
    for min_slope in (1.0, 0.3, 0.0):
        ac = algo._actor_critic  # noqa: SLF001
        ac.cost_critic = NonNegativeCritic(LinearTwin([[1.0, 2.0], [0.5, -1.0]], [0.0, 0.1]))
        ac.cost_critic_optimizer = torch.optim.SGD(ac.cost_critic.parameters(), lr=0.1)
        algo._cost_min_slope = min_slope  # noqa: SLF001
        algo._update_cost_critic(obs, act, cost, done, next_obs)  # noqa: SLF001
        assert algo._logger._data['Loss/Loss_cost_critic'][-1] == pytest.approx(mse, rel=1e-5)  # noqa: SLF001
        slope = lambda z: max(sig(z), min_slope)  # noqa: E731
        grad = [sum((sp(z) - t) * slope(z) for z, t in zip(twin, y)) for twin in zs]
        # matching: [(1.241154 - 0.693) + (1.313262 - 1), (0.770957 - 0.693) + (0.220417 - 1)]
        # = [0.861416, -0.701626]
        expected = T([0.0 - 0.1 * grad[0], 0.1 - 0.1 * grad[1]])
        assert torch.allclose(ac.cost_critic.critic.bias, expected, atol=1e-6)
        if min_slope == 1.0:
            assert grad == pytest.approx([0.861416, -0.701626], abs=1e-5)


def test_floor_logit_from_the_config(tmp_path: Path) -> None:
    """Off by default; ``cost_critic_floor 0.1`` with ``d 0.1``: the logit whose softplus is 0.01
    (-4.6002); a linear head has none."""
    default = build_algo('SACALaM', tmp_path / 'a', fill=1, env_id=LIMIT)
    assert default._cost_logit_floor == -math.inf  # noqa: SLF001
    on = build_algo('SACALaM', tmp_path / 'b', fill=1, env_id=LIMIT, alam_cfgs={'cost_critic_floor': 0.1})
    assert on._cost_logit_floor == pytest.approx(-4.600166, abs=1e-6)  # noqa: SLF001
    linear = build_algo('SACALaM', tmp_path / 'c', fill=1, env_id=LIMIT, alam_cfgs={'cost_critic_output': 'linear', 'cost_critic_floor': 0.1})
    assert linear._cost_logit_floor == -math.inf  # noqa: SLF001


def test_k_sample_f_hat_by_hand(algo) -> None:  # noqa: ANN001
    """``_residual``: mean over the K actions of the twins' max (paper), minus d."""
    algo._cfgs.alam_cfgs.f_hat_pessimism = 1.0  # noqa: SLF001
    # K = 3 actions for one state x = 0.5: -1, 0, 1
    algo._f_actions = lambda obs: T([[[-1.0]], [[0.0]], [[1.0]]])  # noqa: SLF001
    # q1 = 0.5 + 2a = [-1.5, 0.5, 2.5]; q2 = 0.25 - a + 0.1 = [1.35, 0.35, -0.65]
    # max = [1.35, 0.5, 2.5], mean 4.35 / 3 = 1.45; g = 1.45 - d (0.1) = 1.35
    g = algo._residual(T([[0.5]]))  # noqa: SLF001
    assert torch.allclose(g, T([1.35]), atol=1e-6)
    algo._cfgs.alam_cfgs.f_hat_pessimism = 0.0  # noqa: SLF001
    # twins' mean = [-0.075, 0.425, 0.925], mean 0.425; g = 0.325
    assert torch.allclose(algo._residual(T([[0.5]])), T([0.325]), atol=1e-6)  # noqa: SLF001


class _FixedActor(nn.Module):
    """Actor stand-in: fixed actions and log-probabilities, gradient through a scale ``s``."""

    def __init__(self, actions: list[float], log_probs: list[float]) -> None:
        super().__init__()
        self.s = nn.Parameter(T(1.0))
        self.actions, self.log_probs = T(actions).unsqueeze(-1), T(log_probs)

    def predict(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        return self.s * self.actions

    def log_prob(self, act: torch.Tensor) -> torch.Tensor:
        return self.log_probs


@pytest.mark.parametrize('penalty_scale', ['reward_rms', 'normalize'])
def test_assembled_policy_loss_by_hand(algo, penalty_scale: str) -> None:  # noqa: ANN001
    """``_loss_pi`` = SAC's term + the augmented penalty at sg(lambda(x)) on the K-sample g.
    Before any critic step the reward's RMS s is 1; under ``normalize`` the critics' values are
    in units of s / (1 - gamma), so the policy loss reads Q / (1 - gamma) = 100 Q."""
    algo._cfgs.alam_cfgs.penalty_scale = penalty_scale  # noqa: SLF001
    unit = 100.0 if penalty_scale == 'normalize' else 1.0
    ac = algo._actor_critic  # noqa: SLF001
    ac.actor = _FixedActor([0.5, -1.0], [-1.0, -2.0])
    ac.reward_critic = LinearTwin([[1.0, 1.0], [2.0, 0.0]], [0.0, 1.0])
    algo._multiplier_at = lambda obs: T([1.0, 0.0])  # noqa: SLF001
    algo._log_alpha.data.fill_(float(torch.log(T(0.5))))  # noqa: SLF001
    algo._dual.rho.fill_(2.0)  # noqa: SLF001
    algo._cfgs.alam_cfgs.f_hat_pessimism = 1.0  # noqa: SLF001
    algo._f_actions = lambda obs: T([[[0.0], [0.0]]])  # noqa: SLF001  (K = 1, a = 0)
    obs = T([[0.5], [-1.0]])
    # SAC term per state: alpha log pi - min(q1, q2), alpha = 0.5
    #   x = 0.5, a = 0.5: q1 = x + a = 1.0, q2 = 2x + 1 = 2.0 -> -0.5 - 1.0 = -1.5
    #   x = -1, a = -1:   q1 = -2, q2 = -1                  -> -1.0 + 2.0 = 1.0    mean -0.25
    #   (entropy part -0.75, Q part +0.5, the latter times `unit`)
    # g (a = 0): max(q1, q2) - d: x = 0.5: max(0.5, 0.35) - 0.1 = 0.4; x = -1: max(-1, -0.4) - 0.1 = -0.5
    # augmented penalty lam m + rho/2 m^2, m = max(-lam/rho, g):
    #   lam 1: m = max(-0.5, 0.4) = 0.4 -> 0.4 + 0.16 = 0.56
    #   lam 0: m = max(0, -0.5) = 0     -> 0                            mean 0.28
    loss = algo._loss_pi(obs)  # noqa: SLF001
    assert loss.item() == pytest.approx(-0.75 + 0.5 * unit + 0.28, abs=1e-5)
    # gradient to the actor's scale s flows only through the SAC term's Q (a = s * action):
    # d/ds of -(1/2)(q_min(0.5 s) at x=0.5 + q_min(-s) at x=-1): q1 = x + a is the min in both,
    # so d/ds = -(1/2)(0.5 + (-1)) = 0.25
    loss.backward()
    assert ac.actor.s.grad.item() == pytest.approx(0.25 * unit, abs=1e-5)


def test_cost_critic_polyak_step_by_hand(algo) -> None:  # noqa: ANN001
    """Target cost critics move at their own rate (cost_polyak 0.05), the rest at tau."""
    ac = algo._actor_critic  # noqa: SLF001
    assert ac.cost_tau == 0.05
    ac.polyak_update(0.005)
    # target = 0.05 * online + 0.95 * target: [[0.05*1 + 0.95*0.2, 0.05*2 + 0.95*0.4], ...]
    assert torch.allclose(ac.target_cost_critic.weight, T([[0.24, 0.48], [0.595, -0.05]]), atol=1e-6)
    assert torch.allclose(ac.target_cost_critic.bias, T([0.095, 0.29]), atol=1e-6)


def test_dual_cycles_every_m_lambda_policy_steps(algo) -> None:  # noqa: ANN001
    """45 policy steps at m_lambda 10 (after the warm-up epoch): cycles after steps 10, 20, 30, 40."""
    cycles: list[int] = []
    algo._dual_cycle = lambda obs: cycles.append(algo._policy_steps)  # noqa: SLF001
    algo._loss_pi = lambda obs: algo._actor_critic.actor.predict(obs).sum() * 0.0  # noqa: SLF001
    obs = algo._buf.sample_batch()['obs']  # noqa: SLF001
    algo._epoch = 0  # noqa: SLF001  (warmup_epochs 0: epoch 0 is still held back, as SACLag)
    for _ in range(15):
        algo._update_actor(obs)  # noqa: SLF001
    algo._epoch = 1  # noqa: SLF001
    for _ in range(30):
        algo._update_actor(obs)  # noqa: SLF001
    assert cycles == [20, 30, 40]
