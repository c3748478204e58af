"""ALGD's math (omnisafe_alam/core/diffusion.py) against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch

from omnisafe_alam.core import diffusion as D

T = torch.tensor


def test_ve_schedule_by_hand() -> None:
    # K = 5: sigma = 0.01 * 100^[0, .25, .5, .75, 1] = [0.01, 0.0316228, 0.1, 0.316228, 1]
    # sigma^2 = [1e-4, 1e-3, 1e-2, 0.1, 1]; increments [1e-4, 9e-4, 9e-3, 0.09, 0.9]
    sigmas, delta = D.ve_schedule(5)
    assert torch.allclose(sigmas, T([0.01, 0.0316228, 0.1, 0.316228, 1.0]), rtol=1e-5)
    assert torch.allclose(delta, T([1e-4, 9e-4, 9e-3, 0.09, 0.9]), rtol=1e-4)
    assert float(delta.sum()) == pytest.approx(1.0, rel=1e-6)  # telescopes to sigma_max^2
    with pytest.raises(ValueError, match='at least 2'):
        D.ve_schedule(1)
    with pytest.raises(ValueError, match='sigma_min'):
        D.ve_schedule(5, sigma_min=1.0, sigma_max=0.5)


def test_ve_reverse_step_by_hand() -> None:
    # x + 0.09 * score = [0.5 + 0.18, -1 + 0.09] = [0.68, -0.91]; + sqrt(0.09) * [1, -1] = [0.98, -1.21]
    x, score = T([[0.5, -1.0]]), T([[2.0, 1.0]])
    assert torch.allclose(D.ve_reverse_step(x, score, 0.09), T([[0.68, -0.91]]))
    assert torch.allclose(D.ve_reverse_step(x, score, 0.09, T([[1.0, -1.0]])), T([[0.98, -1.21]]))
    # the reference's clamp: an increment of 0 moves by 1e-8 * score
    assert torch.allclose(D.ve_reverse_step(x, score, 0.0, T([[1.0, 1.0]])), x + 1e-4, atol=1e-7)


def test_ensemble_risk_by_hand() -> None:
    # column 0: [1, 3, 2, 2] mean 2, unbiased var (1 + 1) / 3 -> std 0.816497: 2.816497
    # column 1: [2, 2, 2, 6] mean 3, var (1 + 1 + 1 + 9) / 3 = 4 -> std 2: 5
    q_c = T([[1.0, 2.0], [3.0, 2.0], [2.0, 2.0], [2.0, 6.0]])
    assert torch.allclose(D.ensemble_risk(q_c), T([2.816497, 5.0]), atol=1e-6)
    assert torch.allclose(D.ensemble_risk(q_c, k_std=0.0), T([2.0, 3.0]))
    assert torch.equal(D.ensemble_risk(q_c[:1]), q_c[0])  # one member: std 0


def test_augmented_energy_and_its_action_gradient_by_hand() -> None:
    # min Q = [0.5, 2]; lam 0.5, rho 1, h 1: lam + rho (qc - h) = [2.5, 0]
    # penalty ([6.25, 0] - 0.25) / 2 = [3, -0.125]; L_A = [-0.5 + 3, -2 - 0.125] = [2.5, -2.125]
    q1, q2, qc = T([1.0, 2.0]), T([0.5, 3.0]), T([3.0, 0.5])
    assert torch.allclose(D.augmented_energy(q1, q2, qc, 0.5, 1.0, 1.0), T([2.5, -2.125]))
    # rho 2: [0.5 + 4, 0.5 - 1] -> [4.5, 0]; ([20.25, 0] - 0.25) / 4 = [5, -0.0625]; L_A = [4.5, -2.0625]
    assert torch.allclose(D.augmented_energy(q1, q2, qc, 0.5, 2.0, 1.0), T([4.5, -2.0625]))
    # in the action, with Q1 = a, Q2 = 2a, Qc = 3a at a = [1, 0.2] (min Q = Q1 = a, a > 0):
    # dL/da = -1 + [lam + rho (3a - h)]_+ * 3 = -1 + 3 * [0.5 + 2, 0.5 - 0.4]_+ = [6.5, -0.7]
    a = T([1.0, 0.2], requires_grad=True)
    D.augmented_energy(a, 2 * a, 3 * a, 0.5, 1.0, 1.0).sum().backward()
    assert torch.allclose(a.grad, T([6.5, -0.7]))
    with pytest.raises(ValueError, match='rho'):
        D.augmented_energy(q1, q2, qc, 0.5, 0.0, 1.0)


def test_mc_score_target_by_hand() -> None:
    # energies [0, ln 3], beta 1: weights softmax([0, -ln 3]) = [0.75, 0.25];
    # sum w grad = 0.75 [1, 0] + 0.25 [0, 4] = [0.75, 1]; phi* = -[0.75, 1]
    energy, grad = T([[0.0, math.log(3.0)]]), T([[[1.0, 0.0], [0.0, 4.0]]])
    assert torch.allclose(D.mc_score_target(energy, grad, 1.0), T([[-0.75, -1.0]]))
    # beta 2: weights [1, 3^-1/2] / (1 + 3^-1/2) = [0.633975, 0.366025]; sum [0.633975, 1.464102]; / 2
    assert torch.allclose(D.mc_score_target(energy, grad, 2.0), T([[-0.316987, -0.732051]]), atol=1e-6)
    # a Gaussian energy L = a^2 / 2 (beta 1) has the score -a: with every sample at a the target is -a
    a = T([[0.3, -0.6]])
    samples = a.unsqueeze(1).expand(1, 4, 2)
    assert torch.allclose(D.mc_score_target((samples**2).sum(-1) / 2, samples, 1.0), -a)
    with pytest.raises(ValueError, match='disagree'):
        D.mc_score_target(energy, grad[:, :1], 1.0)
    with pytest.raises(ValueError, match='beta'):
        D.mc_score_target(energy, grad, 0.0)


def test_algd_cost_target_by_hand() -> None:
    # 25 (1 - 0.99^1000) / 0.01 / 1000 = 2.5 (1 - 4.3171e-5) = 2.499892
    assert D.algd_cost_target(25.0, 0.99, 1000) == pytest.approx(2.499892, abs=1e-6)
    assert D.algd_cost_target(25.0, 1.0, 1000) == 25.0
    # one step: the limit itself
    assert D.algd_cost_target(25.0, 0.99, 1) == pytest.approx(25.0)
    with pytest.raises(ValueError, match='episode_length'):
        D.algd_cost_target(25.0, 0.99, 0)


def _actor(steps: int = 5):  # noqa: ANN202
    from gymnasium import spaces

    from omnisafe_alam.core.diffusion_actor import DiffusionActor

    torch.manual_seed(0)
    return DiffusionActor(spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,)), [32, 32], steps=steps)


def test_diffusion_actor_chain_by_hand() -> None:
    """With the score head's weights at 0 and its bias at b, every step adds delta_k * b, and the
    increments telescope to sigma_max^2 = 1: the deterministic action is tanh(b) exactly
    (b = [0.5, -2]: [0.462117, -0.964028]). With b = 0 the stochastic latent is sigma_max z_K plus
    the noise of steps 4..1: variance 1 + (1 - 1e-4) = 1.9999."""
    actor = _actor()
    with torch.no_grad():
        actor.score_head.weight.zero_()
        actor.score_head.bias.copy_(T([0.5, -2.0]))
    obs = torch.randn(7, 3)
    assert torch.allclose(actor.predict(obs, deterministic=True), torch.tanh(T([0.5, -2.0])).expand(7, 2), atol=1e-6)
    assert torch.allclose(actor.predict(obs[0], deterministic=True), T([0.462117, -0.964028]), atol=1e-6)
    with torch.no_grad():
        actor.score_head.bias.zero_()
        latent = torch.atanh(actor.predict(torch.randn(40000, 3)).clamp(-1 + 1e-7, 1 - 1e-7))
    assert float(latent.var()) == pytest.approx(1.9999, rel=0.03)
    assert float(latent.mean().abs()) < 0.02


def test_diffusion_actor_samples_trains_and_refuses_densities() -> None:
    actor = _actor()
    obs = torch.randn(64, 3)
    act = actor.predict(obs).detach()
    assert act.shape == (64, 2) and float(act.abs().max()) <= 1.0
    assert torch.equal(actor.predict(obs, deterministic=True), actor.predict(obs, deterministic=True))
    assert not torch.equal(actor.predict(obs), actor.predict(obs))
    # a loss on the action reaches the score network through the whole chain
    a0, a_tau, tau = actor.sample(obs, record_step=True)
    a0.sum().backward()
    assert float(actor.score_head.weight.grad.abs().sum()) > 0
    # the recorded action after step 0 is the action itself
    assert torch.allclose(a_tau[tau == 0], a0.detach()[tau == 0])
    assert set(tau.tolist()) <= set(range(5))
    for call in (lambda: actor.log_prob(act), lambda: actor(obs)):
        with pytest.raises(NotImplementedError, match='no closed-form'):
            call()
