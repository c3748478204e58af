"""Each SPEC formula against values computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

import math

import pytest
import torch

from omnisafe_alam.core import functional as F

T = torch.tensor
LAM = T([1.0, 0.0, 2.0])
G = T([-1.0, 0.5, 0.2])
RHO = 2.0


def test_f_hat_is_mean_over_k_of_max_over_twin_critics() -> None:
    # critic 1: [[1, 2], [3, 0]], critic 2: [[2, 1], [1, 1]]   (rows k, columns states)
    # max over critics: [[2, 2], [3, 1]]; mean over k: [(2+3)/2, (2+1)/2] = [2.5, 1.5]
    q_c = T([[[1.0, 2.0], [3.0, 0.0]], [[2.0, 1.0], [1.0, 1.0]]])
    assert torch.allclose(F.f_hat(q_c), T([2.5, 1.5]))


def test_f_hat_pessimism_blends_mean_and_max_of_the_twins() -> None:
    # same values as above; twins' mean per (k, state): [[1.5, 1.5], [2, 0.5]] -> over k [1.75, 1.0]
    # beta 0.5: halfway between mean and max per (k, state): [[1.75, 1.75], [2.5, 0.75]] -> [2.125, 1.25]
    q_c = T([[[1.0, 2.0], [3.0, 0.0]], [[2.0, 1.0], [1.0, 1.0]]])
    assert torch.allclose(F.f_hat(q_c, 0.0), T([1.75, 1.0]))
    assert torch.allclose(F.f_hat(q_c, 0.5), T([2.125, 1.25]))
    assert torch.allclose(F.f_hat(q_c, 1.0), T([2.5, 1.5]))


def test_f_hat_rejects_wrong_shape() -> None:
    with pytest.raises(ValueError, match='N, K, B'):
        F.f_hat(torch.zeros(2, 3))


def test_cost_critic_target_is_pessimistic_and_stops_at_terminals() -> None:
    # max over critics at x': [2, 4]; y = [1 + 0.5*2, 0 + 0.5*0*4] = [2, 0]
    y = F.cost_critic_target(T([1.0, 0.0]), T([0.0, 1.0]), T([[1.0, 4.0], [2.0, 3.0]]), 0.5)
    assert torch.allclose(y, T([2.0, 0.0]))


def test_optimal_slack_closed_form() -> None:
    # -lam/rho = [-0.5, 0, -1]; -lam/rho - g = [0.5, -0.5, -1.2]; clipped at 0
    assert torch.allclose(F.optimal_slack(LAM, G, RHO), T([0.5, 0.0, 0.0]))


def test_clipped_residual_equals_g_plus_optimal_slack() -> None:
    m = F.clipped_residual(LAM, G, RHO)
    assert torch.allclose(m, T([-0.5, 0.5, 0.2]))
    assert torch.allclose(m, G + F.optimal_slack(LAM, G, RHO))


def test_augmented_penalty_eq16_terms() -> None:
    # lam*m + rho/2*m^2 with m = [-0.5, 0.5, 0.2]:
    # [1*-0.5 + 0.25, 0 + 0.25, 2*0.2 + 0.04] = [-0.25, 0.25, 0.44]
    assert torch.allclose(F.augmented_penalty(LAM, G, RHO), T([-0.25, 0.25, 0.44]))


def test_augmented_penalty_equals_slack_form_of_eq4() -> None:
    # L = lam*(g + p) + rho/2*(g + p)^2 at the optimal slack p
    p = F.optimal_slack(LAM, G, RHO)
    eq4 = LAM * (G + p) + 0.5 * RHO * (G + p) ** 2
    assert torch.allclose(F.augmented_penalty(LAM, G, RHO), eq4)


def test_augmented_penalty_gradient_is_the_dual_target() -> None:
    # d/dg [lam*m + rho/2 m^2] = lam + rho*g where active, 0 where inactive = max(lam+rho*g, 0):
    # the effective multiplier of Eq. 8 is exactly the dual target.
    g = G.clone().requires_grad_(True)
    F.augmented_penalty(LAM, g, RHO).sum().backward()
    assert torch.allclose(g.grad, F.dual_target(LAM, G, RHO))
    assert torch.allclose(g.grad, T([0.0, 1.0, 2.4]))


def test_augmented_penalty_with_a_capped_slope() -> None:
    # lam 2, rho 1, slope cap 5: quadratic up to m* = (5 - 2) / 1 = 3, then slope 5.
    lam, g = T([2.0, 2.0, 2.0, 2.0]), T([-3.0, 1.0, 3.0, 5.0]).requires_grad_(True)
    value = F.augmented_penalty(lam, g, 1.0, slope_max=5.0)
    # inactive: m = -2, 2*-2 + 0.5*4 = -2 (= -lam^2 / 2 rho); g = 1: 2 + 0.5 = 2.5;
    # g = 3 (at m*): 6 + 4.5 = 10.5; g = 5: 10.5 + 5 * (5 - 3) = 20.5
    assert torch.allclose(value, T([-2.0, 2.5, 10.5, 20.5]))
    value.sum().backward()
    # slope min([lam + rho g]_+, 5) = [0, 3, 5, 5]: the dual target projected onto [0, cap]
    assert torch.allclose(g.grad, T([0.0, 3.0, 5.0, 5.0]))
    assert torch.allclose(g.grad, F.dual_target(lam, g.detach(), 1.0, lam_max=5.0))
    # below the kink the paper's penalty, unchanged
    assert torch.allclose(F.augmented_penalty(LAM, G, RHO, slope_max=10.0), F.augmented_penalty(LAM, G, RHO))


def test_lagrangian_penalty() -> None:
    assert torch.allclose(F.lagrangian_penalty(LAM, G), T([-1.0, 0.0, 0.4]))


def test_dual_target() -> None:
    # max(lam + 2g, 0) = [max(-1, 0), 1, 2.4]
    assert torch.allclose(F.dual_target(LAM, G, RHO), T([0.0, 1.0, 2.4]))


def test_multiplier_regression_loss_eq9_and_stop_gradient() -> None:
    lam = T([0.5, 1.0, 2.0]).requires_grad_(True)
    target = T([0.0, 1.0, 2.4]).requires_grad_(True)
    loss = F.multiplier_regression_loss(lam, target)
    # mean(0.25, 0, 0.16) = 0.41 / 3
    assert loss.item() == pytest.approx(0.41 / 3)
    loss.backward()
    assert target.grad is None
    assert torch.allclose(lam.grad, 2 * (lam.detach() - target.detach()) / 3)


def test_multiplier_ascent_loss_eq3_and_stop_gradient() -> None:
    lam = T([0.5, 1.0, 2.0]).requires_grad_(True)
    g = G.clone().requires_grad_(True)
    loss = F.multiplier_ascent_loss(lam, g)
    # -mean(-0.5, 0.5, 0.4) = -0.4/3
    assert loss.item() == pytest.approx(-0.4 / 3)
    loss.backward()
    assert g.grad is None
    assert torch.allclose(lam.grad, -G / 3)  # descent on it = ascent along g


def test_multiplier_losses_above_the_cap_by_hand() -> None:
    # outputs before the cap 10: [12, 12, 5]; g = [0.5, -0.5, 1.0]
    lam = T([12.0, 12.0, 5.0], requires_grad=True)
    g = T([0.5, -0.5, 1.0])
    # ascent, projected: state 1 is at the cap with g > 0 (left out); -(0 + 12 * -0.5 + 5 * 1) / 3 = 1/3
    loss = F.multiplier_ascent_loss(lam, g, 10.0)
    assert loss.item() == pytest.approx(1 / 3)
    loss.backward()
    # d/dlam = -m g / B = [0, 0.5/3, -1/3]: the capped state with g < 0 is pushed down
    assert torch.allclose(lam.grad, T([0.0, 0.5 / 3, -1 / 3]))
    # without a cap (the paper) every state counts: -(6 - 6 + 5) / 3
    assert F.multiplier_ascent_loss(lam.detach(), g).item() == pytest.approx(-5 / 3)
    # regression of the uncapped output toward a target in [0, 10]: an output of 12 is pulled
    # down by 2 (12 - 10) / B per state, which through the capped output it would not be
    lam = T([12.0, 12.0, 5.0], requires_grad=True)
    F.multiplier_regression_loss(lam, T([10.0, 9.0, 5.0])).backward()
    assert torch.allclose(lam.grad, T([4 / 3, 6 / 3, 0.0]))


def test_capped_multiplier_comes_back_below_the_cap() -> None:
    """A multiplier network whose output is 12 everywhere (over the cap of 10) and a dual target
    of 9: 300 Adam steps (lr 1e-2) on the uncapped output bring the capped one below 10; through
    the capped output the loss has no gradient and nothing moves."""
    from omnisafe_alam.core.models import MultiplierNet

    results = {}
    for uncapped in (True, False):
        torch.manual_seed(0)
        net = MultiplierNet(3, [16, 16], max_value=10.0, init_value=12.0)
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        obs = torch.randn(64, 3)
        for _ in range(300):
            out = net.uncapped(obs) if uncapped else net(obs)
            loss = F.multiplier_regression_loss(out, torch.full((64,), 9.0))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            results[uncapped] = net(obs)
    assert results[True].max().item() < 9.5
    assert torch.all(results[False] == 10.0)


def test_violation_metric() -> None:
    # sqrt(mean([0.25, 0.25, 0.04])) = sqrt(0.18)
    assert F.violation_metric(LAM, G, RHO) == pytest.approx(math.sqrt(0.18))


def test_violation_metric_scalar_is_abs_m() -> None:
    # ASAC: lam=1, G=-0.2, rho=2: M = max(-0.5, -0.2) = -0.2, v = 0.2
    assert F.violation_metric(T(1.0), T(-0.2), 2.0) == pytest.approx(0.2)


@pytest.mark.parametrize(
    ('rho', 'v', 'expected'),
    [
        (2.0, 0.6, 3.0),  # v > 1/rho = 0.5: grow by sigma = 1.5
        (2.0, 0.4, 2.0),  # v <= 1/rho: unchanged
        (2.0, 0.5, 2.0),  # boundary: strict inequality
        (4.0, 1.0, 5.0),  # 1.5*4 = 6 capped at rho_max = 5
        (5.0, 9.0, 5.0),  # at the cap it stays
    ],
)
def test_penalty_step(rho: float, v: float, expected: float) -> None:
    assert F.penalty_step(rho, v, sigma=1.5, rho_max=5.0) == pytest.approx(expected)


def test_penalty_step_refuses_nan() -> None:
    with pytest.raises(FloatingPointError, match='violation'):
        F.penalty_step(1.0, float('nan'), 1.01, 5.0)


@pytest.mark.parametrize(
    ('lam', 'g_agg', 'expected'),
    [(1.0, -0.3, 0.4), (1.0, -1.0, 0.0), (0.5, 0.25, 1.0)],  # max(lam + 2*G, 0)
)
def test_scalar_dual_step(lam: float, g_agg: float, expected: float) -> None:
    assert F.scalar_dual_step(lam, g_agg, 2.0) == pytest.approx(expected)


def test_combine_twins_from_mean_to_max() -> None:
    q = T([[1.0, 4.0], [3.0, 0.0]])  # two critics, two states
    assert torch.allclose(F.combine_twins(q, 1.0), T([3.0, 4.0]))
    assert torch.allclose(F.combine_twins(q, 0.0), T([2.0, 2.0]))
    assert torch.allclose(F.combine_twins(q, 0.5), T([2.5, 3.0]))  # mean + |q1 - q2| / 4


def test_cost_critic_target_pessimism_and_cap_by_hand() -> None:
    c, done = T([0.0, 1.0, 0.0]), T([0.0, 0.0, 1.0])
    q_tp1 = T([[50.0, 200.0, 7.0], [60.0, 120.0, 9.0]])
    # mean 55 -> 0.99 * 55; mean 160 capped at 100 -> 1 + 99; terminal -> c only
    got = F.cost_critic_target(c, done, q_tp1, 0.99, pessimism=0.0, value_max=100.0)
    assert torch.allclose(got, T([54.45, 100.0, 0.0]))
    # the paper's target: max, no cap
    assert torch.allclose(F.cost_critic_target(c, done, q_tp1, 0.99), T([59.4, 199.0, 0.0]))


def test_cost_discount_by_hand() -> None:
    # 0 means "the reward's gamma" (the paper's one discount); any other value in [0, 1) is used as is
    assert F.cost_discount(0.0, 0.99) == 0.99
    assert F.cost_discount(0.95, 0.99) == 0.95
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match='cost_gamma'):
            F.cost_discount(bad, 0.99)


def test_dual_target_projects_onto_the_box() -> None:
    # max(lam + rho g, 0) = [0, 1, 2.4], then capped at 2
    assert torch.allclose(F.dual_target(LAM, G, RHO, lam_max=2.0), T([0.0, 1.0, 2.0]))


def test_dual_residual_scales_the_feasible_side_only() -> None:
    # g = F_hat - d with d 0.1: kappa 10 maps [-0.1, 0] onto [-1, 0], violations unchanged
    g = T([-0.1, -0.05, 0.0, 0.3, 2.0])
    assert torch.allclose(F.dual_residual(g, 10.0), T([-1.0, -0.5, 0.0, 0.3, 2.0]))
    assert F.dual_residual(g, 1.0) is g  # the paper's residual, untouched
    # in Eq. 9's target, rho 5: lam 4 at F_hat 0.05 falls to 4 - 5 * 0.5 = 1.5 (paper: 3.75),
    # lam 4 at F_hat 0.3 rises to 4 + 5 * 0.2 = 5 either way
    lam, gd = T([4.0, 4.0]), F.dual_residual(T([-0.05, 0.2]), 10.0)
    assert torch.allclose(F.dual_target(lam, gd, 5.0, lam_max=10.0), T([1.5, 5.0]))


def test_multiplier_net_cap_and_initial_value() -> None:
    from omnisafe_alam.core.models import MultiplierNet

    torch.manual_seed(0)
    net = MultiplierNet(2, [16, 16], init_value=0.05, max_value=3.0)
    x = torch.randn(64, 2)
    assert torch.allclose(net(x), torch.full((64,), 0.05), atol=2e-3)
    last = [m for m in net.net if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.bias.fill_(10.0)  # softplus(10) ~ 10, above the cap
    out = net(x)
    assert torch.allclose(out, torch.full((64,), 3.0))
    out.sum().backward()  # the capped output has no gradient above the cap ...
    assert last.bias.grad is not None and last.bias.grad.abs().max() == 0
    # ... which is why the losses train the output before it (softplus(10) = 10.00005), which has
    last.bias.grad = None
    raw = net.uncapped(x)
    assert torch.allclose(raw, torch.full((64,), 10.0), atol=1e-3)
    raw.sum().backward()
    assert last.bias.grad.item() == pytest.approx(64 * torch.sigmoid(torch.tensor(10.0)).item(), rel=1e-3)


def test_cost_critic_softplus_head_is_nonnegative_and_wraps_the_linear_twins() -> None:
    from gymnasium import spaces

    from omnisafe_alam.core.models import NonNegativeCritic, build_cost_critic

    obs_space = spaces.Box(-1.0, 1.0, (2,))
    act_space = spaces.Box(-1.0, 1.0, (1,))
    torch.manual_seed(0)
    linear = build_cost_critic(obs_space, act_space, [8, 8], 'relu', 'kaiming_uniform', 'linear')
    head = build_cost_critic(obs_space, act_space, [8, 8], 'relu', 'kaiming_uniform', 'softplus')
    assert isinstance(head, NonNegativeCritic) and not isinstance(linear, NonNegativeCritic)
    head.critic.load_state_dict(linear.state_dict())
    obs, act = torch.randn(32, 2), torch.rand(32, 1) * 2 - 1
    for z, q in zip(linear(obs, act), head(obs, act)):
        # softplus(z) = log(1 + e^z): e.g. z = 0 -> log 2 = 0.6931, z = -3 -> 0.0486
        assert torch.allclose(q, torch.log1p(torch.exp(z)), atol=1e-6)
        assert (q > 0).all()
    last = [m for m in head.critic.critic_0.modules() if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(-3.0)
    assert torch.allclose(head(obs, act)[0], torch.full((32,), 0.048587), atol=1e-6)
    with pytest.raises(ValueError, match='cost critic output'):
        build_cost_critic(obs_space, act_space, [8], 'relu', 'kaiming_uniform', 'tanh')


def test_logit_floor_and_its_penalty_by_hand() -> None:
    # logit_floor(v) = log(e^v - 1): v = 0.01 -> log(0.0100502) = -4.60017; softplus(-4.60017) = 0.01
    assert F.logit_floor(0.01) == pytest.approx(-4.600166, abs=1e-6)
    assert math.log1p(math.exp(F.logit_floor(0.01))) == pytest.approx(0.01, rel=1e-9)
    assert F.logit_floor(0.0) == -math.inf
    with pytest.raises(ValueError, match='>= 0'):
        F.logit_floor(-0.1)
    # floor -5; twin 1 [-6, -5, 0]: shortfalls [1, 0, 0] -> mean of squares 1/3
    # twin 2 [-7, 1, -5.5]: shortfalls [2, 0, 0.5] -> (4 + 0.25) / 3; sum over twins 5.25 / 3 = 1.75
    pre = T([[-6.0, -5.0, 0.0], [-7.0, 1.0, -5.5]], requires_grad=True)
    penalty = F.logit_floor_penalty(pre, -5.0)
    assert penalty.item() == pytest.approx(1.75)
    # d/dz = -2 (floor - z) / B below the floor, 0 above: [[-2/3, 0, 0], [-4/3, 0, -1/3]]
    penalty.backward()
    assert torch.allclose(pre.grad, T([[-2 / 3, 0.0, 0.0], [-4 / 3, 0.0, -1 / 3]]))
    assert F.logit_floor_penalty(pre, -math.inf).item() == 0.0
    with pytest.raises(ValueError, match=r'\(N, B\)'):
        F.logit_floor_penalty(T([1.0]), -5.0)


def test_smoothed_action_by_hand() -> None:
    action = torch.tensor([[0.9, -0.2], [0.0, -0.95]])
    noise = torch.tensor([[1.0, -1.0], [0.5, -2.0]])
    # 0.9 + 0.3 = 1.2 -> 1; -0.2 - 0.3 = -0.5; 0 + 0.15; -0.95 - 0.6 -> -1
    out = F.smoothed_action(action, noise, 0.3)
    assert torch.allclose(out, torch.tensor([[1.0, -0.5], [0.15, -1.0]]))
    assert torch.equal(F.smoothed_action(action, noise, 0.0), action)
    with pytest.raises(ValueError, match='std must be >= 0'):
        F.smoothed_action(action, noise, -0.1)


def test_bounded_slope_loss_by_hand() -> None:
    # twins' pre-softplus outputs z, targets y = [1, 0]; softplus(0) = 0.693147,
    # softplus(-12) = 6.1442e-6, softplus(2) = 2.126928, softplus(1) = 1.313262
    # errors e = softplus(z) - y: [[-0.306853, 6.1442e-6], [1.126928, 1.313262]]
    pre = T([[0.0, -12.0], [2.0, 1.0]], requires_grad=True)
    target = T([1.0, 0.0])
    # s = 1 (matching): weights 1; value 2 sum_i mean_b(e z)
    # = (-0.306853 * 0 + 6.1442e-6 * -12) + (1.126928 * 2 + 1.313262 * 1) = 3.567044
    surrogate = F.bounded_slope_loss(pre, target, 1.0)
    assert surrogate.item() == pytest.approx(3.567044, abs=1e-5)
    # gradient 2 e w / B = e (B = 2)
    surrogate.backward()
    assert torch.allclose(pre.grad, T([[-0.306853, 6.1442e-6], [1.126928, 1.313262]]), atol=1e-6)
    # s = 0.1: sigmoid(z) = [[0.5, 6.1442e-6], [0.880797, 0.731059]] -> weights [[0.5, 0.1], [0.880797, 0.731059]]
    pre.grad = None
    F.bounded_slope_loss(pre, target, 0.1).backward()
    expected = T([[-0.306853 * 0.5, 6.1442e-6 * 0.1], [1.126928 * 0.880797, 1.313262 * 0.731059]])
    assert torch.allclose(pre.grad, expected, atol=1e-6)
    # s = 0: exactly the MSE's gradient, sum over the twins of mean((softplus(z) - y)^2)
    pre.grad = None
    F.bounded_slope_loss(pre, target, 0.0).backward()
    mse_pre = pre.detach().clone().requires_grad_(True)
    sum(torch.nn.functional.mse_loss(torch.nn.functional.softplus(z), target) for z in mse_pre).backward()
    assert torch.allclose(pre.grad, mse_pre.grad, atol=1e-7)
    with pytest.raises(ValueError, match=r'\(N, B\)'):
        F.bounded_slope_loss(T([1.0, 2.0]), target, 1.0)
    with pytest.raises(ValueError, match='min_slope'):
        F.bounded_slope_loss(pre, target, 1.5)


@pytest.mark.parametrize('min_slope', [1.0, 0.1, 0.0])
def test_bounded_slope_loss_fits_the_mean(min_slope: float) -> None:
    """Any s fits the targets' mean, as the MSE: gradient descent on one output whose targets
    are 0 and 3 in equal parts, from z = -20, ends at softplus(z) = 1.5 for s = 1 and 0.1. With
    s = 0 (the MSE's gradient, 2 x 1.5 x sigmoid(-20) = 6e-9 there) it stays below 1e-6."""
    z = T([[-20.0]], requires_grad=True)
    optimizer = torch.optim.SGD([z], lr=0.2)
    for _ in range(1500):
        optimizer.zero_grad()
        F.bounded_slope_loss(z.expand(1, 2), T([0.0, 3.0]), min_slope).backward()
        optimizer.step()
    value = torch.nn.functional.softplus(z).item()
    if min_slope > 0:
        assert value == pytest.approx(1.5, abs=1e-4)
    else:
        assert value < 1e-6


@pytest.mark.parametrize(('value_floor', 'learns'), [(0.0, False), (0.01, True)])
def test_floor_revives_a_saturated_softplus_cost_critic(value_floor: float, learns: bool) -> None:
    """A softplus critic whose outputs sit at -30 before the head (where a long stretch without
    cost leaves it: slope 1e-13, under Adam's eps) learns nothing from new costs without the
    floor, and learns them with it (600 Adam steps at 1e-3, targets 5 on half the inputs)."""
    from gymnasium import spaces

    from omnisafe_alam.core.models import build_cost_critic

    torch.manual_seed(0)
    critic = build_cost_critic(spaces.Box(-1, 1, (2,)), spaces.Box(-1, 1, (1,)), [32, 32], 'relu', 'kaiming_uniform', 'softplus')
    for twin in (critic.critic.critic_0, critic.critic.critic_1):
        with torch.no_grad():
            [m for m in twin.modules() if isinstance(m, torch.nn.Linear)][-1].bias.fill_(-30.0)
    optimizer = torch.optim.Adam(critic.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(1)
    floor = F.logit_floor(value_floor)
    for _ in range(600):
        obs, act = torch.rand(128, 2, generator=gen) * 2 - 1, torch.rand(128, 1, generator=gen) * 2 - 1
        target = 5.0 * (obs[:, 0] > 0).float()
        pre = critic.pre_activations(obs, act)
        loss = sum(torch.nn.functional.mse_loss(torch.nn.functional.softplus(z), target) for z in pre)
        loss = loss + F.logit_floor_penalty(torch.stack(pre), floor)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    obs, act = torch.rand(1000, 2, generator=gen) * 2 - 1, torch.rand(1000, 1, generator=gen) * 2 - 1
    with torch.no_grad():
        q = torch.stack(critic(obs, act)).mean(0)
    costly, safe = q[obs[:, 0] > 0].mean().item(), q[obs[:, 0] <= 0].mean().item()
    if learns:
        assert costly > 3.0 and safe < 1.0
    else:
        assert costly < 0.01


# ------------------------------------------------------------------ SAC-FPI (arXiv 2304.08845)


def test_fpi_cdf_target_by_hand() -> None:
    # gamma 0.9; next G twins (rows critics): [0.5, 0.3, 0.9, 1.4] and [0.7, 0.1, 0.2, -0.2]
    # s0: no cost, not done: 0.9 * max(0.5, 0.7) = 0.63
    # s1: cost 2.0 > 0 counts as 1 and ends the recursion: 1
    # s2: terminal, no cost: 0
    # s3: max 1.4 is clipped to 1: 0.9 * 1 = 0.9
    out = F.fpi_cdf_target(T([0.0, 2.0, 0.0, 0.0]), T([0.0, 0.0, 1.0, 0.0]), T([[0.5, 0.3, 0.9, 1.4], [0.7, 0.1, 0.2, -0.2]]), 0.9)
    assert torch.allclose(out, T([0.63, 1.0, 0.0, 0.9]))
    # negative twins clip to 0 from below: 0.9 * clip(max(-0.3, -0.1), 0, 1) = 0
    assert float(F.fpi_cdf_target(T([0.0]), T([0.0]), T([[-0.3], [-0.1]]), 0.9)) == 0.0
    with pytest.raises(ValueError, match='N, B'):
        F.fpi_cdf_target(T([0.0]), T([0.0]), T([0.5]), 0.9)


def test_fpi_barrier_weight_by_hand() -> None:
    # p_f 0.1, t 0.5: h = clip(G - 0.1, -0.1, -1e-6), b = 0.5 (-1/h - 10)
    # G = -0.2: h = -0.1 (clipped), b = 0.5 (10 - 10) = 0
    # G = 0.05: h = -0.05, b = 0.5 (20 - 10) = 5
    # G = 0.3: h = -1e-6 (clipped), b = 0.5 (1e6 - 10) = 499995
    g = T([-0.2, 0.05, 0.3], dtype=torch.float64)
    h, b = F.fpi_barrier_weight(g, 0.1, 0.5)
    assert torch.allclose(h, T([-0.1, -0.05, -1e-6], dtype=torch.float64))
    assert torch.allclose(b, T([0.0, 5.0, 499995.0], dtype=torch.float64))


def test_fpi_policy_loss_value_and_gradients_by_hand() -> None:
    # p_f 0.1, t 0.5, alpha 0.1, B = 4; feasible iff G - 0.1 < -1e-6: [yes, yes, no, no]
    # feasible terms (-Q + b h) / (1 + b): s0 (-1 + 0)/1 = -1; s1 (-2 + 5 (-0.05))/6 = -0.375
    # entropy alpha log pi: -0.1 - 0.1 - 0.2 - 0.2 = -0.6
    # feasible part (-1 - 0.375 - 0.6)/4 = -0.49375; infeasible part (0.1 + 0.3)/4 = 0.1
    q = T([1.0, 2.0, 3.0, 4.0], dtype=torch.float64, requires_grad=True)
    g = T([-0.2, 0.05, 0.1, 0.3], dtype=torch.float64, requires_grad=True)
    logp = T([-1.0, -1.0, -2.0, -2.0], dtype=torch.float64, requires_grad=True)
    loss, stats = F.fpi_policy_loss(q, g, logp, 0.1, 0.1, 0.5)
    assert math.isclose(loss.item(), -0.39375, rel_tol=1e-12)
    assert stats['feasible'].tolist() == [True, True, False, False]
    # barrier statistic: mean of b / (1 + b) over feasible states: (0 + 5/6)/2
    assert math.isclose(float(stats['barrier']), 5 / 12, rel_tol=1e-12)
    loss.backward()
    # dL/dQ = -1/(1+b)/B on feasible states only: [-1/4, -1/24, 0, 0]
    assert torch.allclose(q.grad, T([-0.25, -1 / 24, 0.0, 0.0], dtype=torch.float64))
    # dL/dG: s0 is clipped (no gradient), s1 b/(1+b)/B = 5/24 (b held constant),
    # infeasible s2, s3: 1/B = 0.25 (they only decrease G)
    assert torch.allclose(g.grad, T([0.0, 5 / 24, 0.25, 0.25], dtype=torch.float64))
    # dL/dlog pi = alpha / B everywhere
    assert torch.allclose(logp.grad, torch.full((4,), 0.025, dtype=torch.float64))


def test_fpi_policy_loss_without_feasible_states_has_zero_barrier_statistic() -> None:
    loss, stats = F.fpi_policy_loss(T([1.0]), T([0.5]), T([0.0]), 0.2, 0.1, 1.0)
    # infeasible only: G / B = 0.5, alpha log pi = 0
    assert float(loss) == 0.5 and float(stats['barrier']) == 0.0


def test_reward_rms_by_hand() -> None:
    # rate 0.5: m_1 = 0.5 * 0 + 0.5 * 4 = 2; corrected 2 / (1 - 0.5) = 4 -> rms 2 (the one batch's)
    m1 = F.reward_rms_ema(0.0, 4.0, 0.5)
    assert m1 == pytest.approx(2.0)
    assert F.reward_rms(m1, 1, 0.5) == pytest.approx(2.0)
    # m_2 = 0.5 * 2 + 0.5 * 1 = 1.5; corrected 1.5 / (1 - 0.25) = 2 -> rms sqrt(2)
    m2 = F.reward_rms_ema(m1, 1.0, 0.5)
    assert F.reward_rms(m2, 2, 0.5) == pytest.approx(math.sqrt(2.0))
    # before any step: the paper's weight 1; all-zero rewards: the floor
    assert F.reward_rms(0.0, 0, 0.5) == 1.0
    assert F.reward_rms(0.0, 3, 0.5, floor=1e-6) == 1e-6
    # a constant reward scale k: the rms scales by k exactly (what makes the penalty scale-free)
    for k in (0.01, 1.0, 1000.0):
        m = 0.0
        for step in range(50):
            m = F.reward_rms_ema(m, (0.3 * k) ** 2, 0.001)
        assert F.reward_rms(m, 50, 0.001) == pytest.approx(0.3 * k, rel=1e-9)
    with pytest.raises(ValueError, match='rate'):
        F.reward_rms_ema(0.0, 1.0, 0.0)


def test_normalized_reward_by_hand() -> None:
    # rewards (1, -2, 4), RMS s = 2, gamma 0.9: (1 - 0.9) r / 2 = (0.05, -0.1, 0.2); x100 with s = 200: the same
    reward = torch.tensor([1.0, -2.0, 4.0])
    assert F.normalized_reward(reward, 2.0, 0.9).tolist() == pytest.approx([0.05, -0.1, 0.2])
    assert torch.allclose(F.normalized_reward(100.0 * reward, 200.0, 0.9), F.normalized_reward(reward, 2.0, 0.9))
    with pytest.raises(ValueError, match='rms'):
        F.normalized_reward(reward, 0.0, 0.9)


def test_budget_dual_rates_by_hand() -> None:
    paper = dict(m_lambda=200, multiplier_lr=1e-5, reference_steps=4_000_000, m_lambda_min=20, multiplier_lr_max=1e-3)
    # T = T0 and beyond: the paper's values
    assert F.budget_dual_rates(4_000_000, **paper) == (200, pytest.approx(1e-5))
    assert F.budget_dual_rates(8_000_000, **paper) == (200, pytest.approx(1e-5))
    # 100k: s = 40, 200 / sqrt(40) = 31.6 -> 32, 1e-5 * 40 = 4e-4
    assert F.budget_dual_rates(100_000, **paper) == (32, pytest.approx(4e-4))
    # 1M: s = 4, 200 / 2 = 100, 4e-5
    assert F.budget_dual_rates(1_000_000, **paper) == (100, pytest.approx(4e-5))
    # 40k: s = 100, 200 / 10 = 20, 1e-3 (the known-answer tasks' hand-tuned pair); 8k: the bounds
    assert F.budget_dual_rates(40_000, **paper) == (20, pytest.approx(1e-3))
    assert F.budget_dual_rates(8_000, **paper) == (20, pytest.approx(1e-3))
    # bounds that would cross the paper's values never move past them
    assert F.budget_dual_rates(8_000, 10, 1e-2, 4_000_000, 20, 1e-3) == (10, pytest.approx(1e-2))
    with pytest.raises(ValueError, match='total_steps'):
        F.budget_dual_rates(0, **paper)
