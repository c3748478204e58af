"""Gradient ownership: who may push gradients into which network (STYLE habit 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from conftest import build_algo

STATEWISE = ['SACALaM', 'SACALaMGA', 'SACLagNet']


def _grads(module: torch.nn.Module) -> list[torch.Tensor | None]:
    return [p.grad for p in module.parameters()]


def _zero(*modules: torch.nn.Module) -> None:
    for module in modules:
        module.zero_grad(set_to_none=True)


@pytest.fixture(scope='module')
def algos(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return {
        name: build_algo(name, tmp_path_factory.mktemp(name), alam_cfgs={'multiplier_lr': 1e-2})
        for name in [*STATEWISE, 'ASAC']
    }


@pytest.mark.parametrize('name', STATEWISE)
def test_actor_loss_leaves_no_gradient_on_the_multiplier(algos: dict, name: str) -> None:
    algo = algos[name]
    ac = algo._actor_critic
    obs = algo._buf.sample_batch()['obs']
    _zero(ac)
    algo._loss_pi(obs).backward()
    assert all(g is None for g in _grads(ac.multiplier))
    assert any(g is not None and g.abs().sum() > 0 for g in _grads(ac.actor))


@pytest.mark.parametrize('name', STATEWISE)
def test_multiplier_loss_leaves_no_gradient_on_actor_or_critics(algos: dict, name: str) -> None:
    algo = algos[name]
    ac = algo._actor_critic
    obs = algo._buf.sample_batch()['obs']
    with torch.no_grad():
        g = algo._residual(obs)
    _zero(ac)
    frozen = type(ac.multiplier)(obs.shape[-1], [32, 32])
    frozen.load_state_dict(ac.multiplier.state_dict())
    algo._multiplier_loss(obs, g, frozen.requires_grad_(False)).backward()
    for part in (ac.actor, ac.reward_critic, ac.cost_critic):
        assert all(grad is None for grad in _grads(part))
    assert all(grad is not None for grad in _grads(ac.multiplier))
    assert all(p.grad is None for p in frozen.parameters())


def test_policy_gradient_reaches_theta_through_f_hat(algos: dict) -> None:
    # With the SAC term removed, the penalty alone must move the actor (reparameterised K samples).
    algo = algos['SACALaM']
    obs = algo._buf.sample_batch()['obs']
    _zero(algo._actor_critic)
    g = algo._residual(obs)
    lam = algo._multiplier_at(obs).detach() + 1.0
    algo._penalty(lam, g).mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in algo._actor_critic.actor.parameters())


def test_dual_target_is_constant_across_the_n_dual_steps(algos: dict) -> None:
    algo = algos['SACALaM']
    net = algo._actor_critic.multiplier
    probe = algo._buf.sample_batch()['obs']
    with torch.no_grad():
        start = net(probe).clone()
    seen_frozen, seen_live = [], []
    original = algo._multiplier_loss

    def spy(obs: torch.Tensor, g: torch.Tensor, frozen: torch.nn.Module) -> torch.Tensor:
        with torch.no_grad():
            seen_frozen.append(frozen(probe).clone())
            seen_live.append(net(probe).clone())
        return original(obs, g, frozen)

    algo._multiplier_loss = spy
    try:
        algo._update_multiplier(algo._buf.sample_batch()['obs'])
    finally:
        del algo._multiplier_loss
    assert len(seen_frozen) == algo._cfgs.alam_cfgs.n_dual == 5
    for frozen_out in seen_frozen:  # lambda_k stays the multiplier at the start of the cycle
        assert torch.equal(frozen_out, start)
    assert not torch.allclose(seen_live[-1], start)  # while the live network moves


@pytest.mark.parametrize('gain', [1.0, 10.0])
def test_multiplier_step_sees_the_scaled_feasible_residual(algos: dict, gain: float) -> None:
    # alam_cfgs.dual_feasible_gain reaches every dual step's residual, and only its g <= 0 side
    algo = algos['SACALaM']
    field = torch.linspace(-0.1, 0.4, algo._buf.sample_batch()['obs'].shape[0])
    seen = []
    original = algo._multiplier_loss

    def spy(obs: torch.Tensor, g: torch.Tensor, frozen: torch.nn.Module) -> torch.Tensor:
        seen.append(g.clone())
        return original(obs, g, frozen)

    algo._residual = lambda o: field[: o.shape[0]]
    algo._multiplier_loss = spy
    algo._cfgs.alam_cfgs.dual_feasible_gain = gain
    try:
        algo._update_multiplier(algo._buf.sample_batch()['obs'])
    finally:
        del algo._multiplier_loss, algo._residual
        algo._cfgs.alam_cfgs.dual_feasible_gain = 1.0
    want = torch.where(field > 0, field, gain * field)
    assert len(seen) == algo._cfgs.alam_cfgs.n_dual
    for g in seen:
        assert torch.allclose(g, want)
    assert float(seen[0].min()) == pytest.approx(-0.1 * gain)


def test_asac_scalar_multiplier_closed_form(algos: dict) -> None:
    algo = algos['ASAC']
    assert algo._actor_critic.multiplier is None
    algo._dual.lam.fill_(0.0)
    algo._dual.rho.fill_(2.0)
    obs = algo._buf.sample_batch()['obs']
    # a controlled residual field: g(x) = 0.3 everywhere, so G = 0.3
    algo._residual = lambda o: torch.full((o.shape[0],), 0.3)
    try:
        algo._update_multiplier(obs)
        assert float(algo._dual.lam) == pytest.approx(0.6)  # max(0 + 2*0.3, 0)
        algo._residual = lambda o: torch.full((o.shape[0],), -1.0)
        algo._update_multiplier(obs)
        assert float(algo._dual.lam) == 0.0  # max(0.6 - 2, 0)
        # the policy penalty uses the scalar on the batch mean: lam=0, G=-1 -> M=max(0,-1)=0
        assert algo._penalty(algo._multiplier_at(obs), torch.full((4,), -1.0)).item() == 0.0
    finally:
        del algo._residual


def test_penalty_schedule_raises_rho_on_violation(algos: dict) -> None:
    algo = algos['SACALaM']
    algo._dual.rho.fill_(1.0)
    algo._cfgs.alam_cfgs.d = -100.0  # every state violates F_hat <= d by ~100 >> 1/rho
    try:
        algo._dual_cycle(algo._buf.sample_batch()['obs'])
    finally:
        algo._cfgs.alam_cfgs.d = 0.1
    assert float(algo._dual.rho) == pytest.approx(1.01)
    assert algo._dual_stats['Metrics/Violation'] > 1.0
    assert algo._dual_stats['Metrics/FeasibleFrac'] == 0.0


def test_lagnet_keeps_rho_fixed(algos: dict) -> None:
    algo = algos['SACLagNet']
    algo._cfgs.alam_cfgs.d = -100.0
    try:
        algo._dual_cycle(algo._buf.sample_batch()['obs'])
    finally:
        algo._cfgs.alam_cfgs.d = 0.1
    assert float(algo._dual.rho) == algo._cfgs.alam_cfgs.rho_init


def test_each_variant_wires_its_own_formulas(algos: dict) -> None:
    """Hand values: lam = [1, 0, 2], g = [-1, 0.5, 0.2], rho = 2 (as in test_functional)."""
    lam = torch.tensor([1.0, 0.0, 2.0])
    g = torch.tensor([-1.0, 0.5, 0.2])
    for name in ('SACALaM', 'SACALaMGA', 'ASAC'):
        algos[name]._dual.rho.fill_(2.0)
    # augmented Lagrangian per state: [-0.25, 0.25, 0.44]
    for name in ('SACALaM', 'SACALaMGA'):
        assert torch.allclose(algos[name]._penalty(lam, g), torch.tensor([-0.25, 0.25, 0.44]))
    # Lagrangian per state: lam * g = [-1, 0, 0.4]
    assert torch.allclose(algos['SACLagNet']._penalty(lam, g), torch.tensor([-1.0, 0.0, 0.4]))
    # ASAC: scalar lam = 1 on G = mean(g) = -0.1: M = max(-0.5, -0.1) = -0.1 -> -0.1 + 0.01 = -0.09
    assert algos['ASAC']._penalty(torch.tensor(1.0), g).item() == pytest.approx(-0.09)
    # multiplier losses on a batch where the network is replaced by known values
    obs = algos['SACALaM']._buf.sample_batch()['obs'][:3]
    frozen = lambda o: torch.tensor([1.0, 0.0, 2.0])  # noqa: E731  lambda_k
    # (the losses train the output before the cap, multiplier_max 10)
    for name in ('SACALaM', 'SACALaMGA', 'SACLagNet'):
        algos[name]._multiplier_uncapped = lambda o: torch.tensor([0.5, 1.0, 2.0])
    try:
        # regression to max(lam_k + 2 g, 0) = [0, 1, 2.4]: mean(0.25, 0, 0.16)
        assert algos['SACALaM']._multiplier_loss(obs, g, frozen).item() == pytest.approx(0.41 / 3)
        # ascent: -mean(lam * g) = -mean(-0.5, 0.5, 0.4)
        for name in ('SACALaMGA', 'SACLagNet'):
            assert algos[name]._multiplier_loss(obs, g, frozen).item() == pytest.approx(-0.4 / 3)
        # above the cap: outputs [12, 12, 2]; regression to [0, 1, 2.4] (lam_k capped at 10 is
        # the frozen value, here [1, 0, 2]): mean(144, 121, 0.16); ascent: the first state (g < 0)
        # still counts, the second (at the cap, g > 0) does not: -mean(-12, 0, 0.4)
        for name in ('SACALaM', 'SACALaMGA', 'SACLagNet'):
            algos[name]._multiplier_uncapped = lambda o: torch.tensor([12.0, 12.0, 2.0])
        assert algos['SACALaM']._multiplier_loss(obs, g, frozen).item() == pytest.approx(265.16 / 3)
        for name in ('SACALaMGA', 'SACLagNet'):
            assert algos[name]._multiplier_loss(obs, g, frozen).item() == pytest.approx(11.6 / 3)
    finally:
        for name in ('SACALaM', 'SACALaMGA', 'SACLagNet'):
            del algos[name]._multiplier_uncapped


@pytest.mark.parametrize('name', ['SACALaM', 'SACALaMGA'])
def test_the_penalty_slope_is_capped_at_the_multiplier_cap_by_default(algos: dict, name: str) -> None:
    """Far outside the constraint the default penalty rises at slope multiplier_max (10), not
    lambda + rho g (alam_cfgs.penalty_slope: capped); close to it the paper's slope is kept."""
    algo = algos[name]
    assert algo._cfgs.alam_cfgs.penalty_slope == 'capped'
    cap = float(algo._cfgs.alam_cfgs.multiplier_max)
    rho = float(algo._dual.rho)
    algo._dual.rho.fill_(5.0)  # at rho_max: rho g alone is 5 x g
    try:
        lam = torch.tensor([1.0, 1.0])
        g = torch.tensor([0.2, 20.0], requires_grad=True)  # lam + rho g: 2 and 101
        algo._penalty(lam, g).sum().backward()
    finally:
        algo._dual.rho.fill_(rho)
    assert g.grad.tolist() == pytest.approx([2.0, cap])


def test_policy_std_is_measured_at_the_dual_cycle_only(algos: dict) -> None:
    # Train/PolicyStd: the actor's batch-mean std before the tanh, read at the policy step that
    # ends a dual cycle (as Actor/GradNorm*), untouched at the steps between
    algo = algos['SACALaM']
    obs = algo._buf.sample_batch()['obs']
    with torch.no_grad():
        expected = algo._actor_critic.actor._distribution(obs).stddev.mean().item()
    steps, epoch = algo._policy_steps, algo._epoch
    algo._epoch = algo._cfgs.algo_cfgs.warmup_epochs + 1
    try:
        algo._dual_stats['Train/PolicyStd'] = -1.0
        algo._policy_steps = algo._m_lambda  # the next step (m_lambda + 1) is not due
        algo._loss_pi(obs)
        assert algo._dual_stats['Train/PolicyStd'] == -1.0
        algo._policy_steps = algo._m_lambda - 1  # the next step ends a dual cycle
        algo._loss_pi(obs)
        assert algo._dual_stats['Train/PolicyStd'] == pytest.approx(expected, rel=1e-6)
        assert 0.0 < expected < 10.0
    finally:
        algo._policy_steps, algo._epoch = steps, epoch
