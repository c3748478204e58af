"""ALGD as an OmniSafe algorithm: its remaining pure functions by hand, its networks, its config
checks, a gradient step, and the diffusion actor's checkpoint round trip."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import build_algo
from omnisafe_alam.core import diffusion as D

T = torch.tensor
LIMIT = 'StatewiseLimit-v0'


def test_ensemble_cost_target_by_hand() -> None:
    # member 0: 0.5 + 0.9 * [2, 4] * [1, 0] = [2.3, 0.5]; member 1: 0.5 + 0.9 * [1, 3] * [1, 0] = [1.4, 0.5]
    # (cost [0.5, 0.5], done [0, 1]: the second transition does not bootstrap)
    out = D.ensemble_cost_target(T([0.5, 0.5]), T([0.0, 1.0]), T([[2.0, 4.0], [1.0, 3.0]]), 0.9)
    assert torch.allclose(out, T([[2.3, 0.5], [1.4, 0.5]]))
    assert not out.requires_grad


def test_multiplier_loss_and_its_log_gradient_by_hand() -> None:
    # lambda = 2, h = 1, Qbar_c = [0.5, 3.5]: loss 2 * mean([0.5, -2.5]) = -2; d/dlog(lambda) = -2 too
    log_lam = torch.tensor(math.log(2.0), requires_grad=True)
    risk = T([0.5, 3.5], requires_grad=True)
    loss = D.multiplier_loss(log_lam.exp(), 1.0, risk)
    assert float(loss.detach()) == pytest.approx(-2.0)
    loss.backward()
    assert float(log_lam.grad) == pytest.approx(-2.0)  # descent raises lambda: Qbar_c is above h
    assert risk.grad is None  # the bracket is detached


def test_scalar_multiplier() -> None:
    from omnisafe_alam.core.models import ScalarMultiplier

    lam = ScalarMultiplier(0.6931)
    assert float(lam().detach()) == pytest.approx(0.6931, rel=1e-6)
    assert float(lam.log_lam.detach()) == pytest.approx(math.log(0.6931), rel=1e-6)
    with pytest.raises(ValueError, match='must be > 0'):
        ScalarMultiplier(0.0)


def test_a_gradient_step_trains_every_part_and_logs_what_algd_measures(tmp_path: Path) -> None:
    """One ALGD step: the critics regress, the actor moves through its chain, the multiplier takes
    its dual step, the targets follow every 2nd step; h is the task section's 0.1."""
    algo = build_algo('ALGD', tmp_path, env_id=LIMIT, algo_cfgs={'update_iters': 1})
    ac = algo._actor_critic  # noqa: SLF001
    assert algo._h == pytest.approx(0.1)  # noqa: SLF001
    assert len(ac.cost_critic.net_lst) == 4
    before = {name: [p.detach().clone() for p in m.parameters()] for name, m in (
        ('actor', ac.actor), ('reward', ac.reward_critic), ('cost', ac.cost_critic), ('lam', algo._multiplier),  # noqa: SLF001
        ('target_cost', ac.target_cost_critic),
    )}
    algo._update()  # noqa: SLF001  (update 1: no Polyak step yet)
    moved = {name: any(not torch.equal(a, b) for a, b in zip(params, m.parameters())) for name, params, m in (
        (n, before[n], mod) for n, mod in (
            ('actor', ac.actor), ('reward', ac.reward_critic), ('cost', ac.cost_critic),
            ('lam', algo._multiplier), ('target_cost', ac.target_cost_critic),  # noqa: SLF001
        )
    )}
    assert moved == {'actor': True, 'reward': True, 'cost': True, 'lam': True, 'target_cost': False}
    algo._update()  # noqa: SLF001  (update 2: the targets follow)
    assert any(not torch.equal(a, b) for a, b in zip(before['target_cost'], ac.target_cost_critic.parameters()))
    stats = {key: algo._logger.get_stats(key)[0] for key in ('Metrics/Lambda', 'Loss/Loss_score', 'Value/cost_risk')}  # noqa: SLF001
    assert all(math.isfinite(v) for v in stats.values()), stats
    assert stats['Loss/Loss_score'] > 0


def test_the_score_target_is_the_energy_gradient_at_one_sample(tmp_path: Path) -> None:
    """With N = 1 the softmax weight is 1: the target is -grad_a L_A / beta at the one perturbed
    action, which the test recomputes from the same noise."""
    algo = build_algo('ALGD', tmp_path, env_id=LIMIT, model_cfgs={'diffusion': {'score_samples': 1, 'beta': 2.0}})
    obs = algo._buf.sample_batch()['obs'][:8]  # noqa: SLF001
    a_tau = torch.rand(8, 1) * 2 - 1
    tau = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2])
    torch.manual_seed(3)
    target = algo._score_target(obs, a_tau, tau)  # noqa: SLF001
    torch.manual_seed(3)
    noisy = (a_tau + algo._actor_critic.actor.sigmas[tau].view(8, 1) * torch.randn(8, 1, 1).view(8, 1)).requires_grad_(True)  # noqa: SLF001
    energy, _, _ = algo._energy(obs, noisy)  # noqa: SLF001
    (grad,) = torch.autograd.grad(energy.sum(), noisy)
    assert torch.allclose(target, -grad / 2.0, atol=1e-6)


def test_config_checks_name_the_problem(tmp_path: Path) -> None:
    from omnisafe_alam.glue.config import AlamConfigError

    cases = [
        ({'algo_cfgs': {'auto_alpha': True}}, 'ALGD has no entropy term'),
        ({'algd_cfgs': {'ensemble_size': 0}}, r'algd_cfgs.ensemble_size=0 must be >= 1'),
        ({'algd_cfgs': {'bogus': 1}}, 'Invalid key: bogus'),  # OmniSafe's own check, first
        ({'model_cfgs': {'diffusion': {'steps': 1}}}, r'model_cfgs.diffusion.steps=1 must be >= 2'),
    ]
    for overrides, message in cases:
        with pytest.raises(Exception, match=message) as error:
            build_algo('ALGD', tmp_path / str(len(message)), fill=1, env_id=LIMIT, **overrides)
        assert error.type in (AlamConfigError, KeyError), error.type
    # OmniSafe drops a group its defaults lack before the algorithm sees it; the check itself:
    from omnisafe_alam.glue.config import validate_run_cfgs
    from omnisafe_alam.glue.defaults import load_defaults

    mixed = load_defaults('ALGD')
    mixed['algo'] = 'ALGD'
    validate_run_cfgs(mixed)  # the defaults pass
    mixed['alam_cfgs'] = load_defaults('SACALaM').alam_cfgs
    with pytest.raises(AlamConfigError, match='alam_cfgs does not apply to ALGD; its settings are in algd_cfgs'):
        validate_run_cfgs(mixed)


def test_a_checkpoint_carries_the_diffusion_schedule() -> None:
    """``omnisafe eval`` rebuilds every actor with the builder's defaults (5 steps): a 3-step
    actor's state dict still loads into it and acts the same."""
    from gymnasium import spaces
    from omnisafe.models.actor.actor_builder import ActorBuilder

    from omnisafe_alam.core.diffusion_actor import DiffusionActor

    import omnisafe_alam  # noqa: F401  (the builder learns 'diffusion')

    obs_space, act_space = spaces.Box(-1, 1, (3,)), spaces.Box(-1, 1, (2,))
    trained = DiffusionActor(obs_space, act_space, [16, 16], steps=3, sigma_min=0.05, sigma_max=2.0)
    rebuilt = ActorBuilder(obs_space, act_space, [16, 16]).build_actor('diffusion')
    assert isinstance(rebuilt, DiffusionActor) and rebuilt.steps == 5
    rebuilt.load_state_dict(trained.state_dict())
    assert rebuilt.steps == 3 and torch.equal(rebuilt.sigmas, trained.sigmas)
    obs = torch.randn(6, 3)
    assert torch.equal(rebuilt.predict(obs, deterministic=True), trained.predict(obs, deterministic=True))


# ---------------------------------------------------------------- the state-wise family's diffusion actor
def test_sacalam_with_a_diffusion_actor_steps_without_entropy(tmp_path: Path) -> None:
    """``model_cfgs.actor_type: diffusion`` for SACALaM: the actor is ALGD's, F_hat comes from K
    chains with gradient, the soft target has no entropy term whatever alpha says, the
    temperature never moves, and the score regulariser is part of the policy loss."""
    from omnisafe_alam.core.diffusion_actor import DiffusionActor

    algo = build_algo(
        'SACALaM', tmp_path, env_id=LIMIT,
        model_cfgs={'actor_type': 'diffusion'}, algo_cfgs={'alpha': 50.0, 'auto_alpha': True},
    )
    actor = algo._actor_critic.actor  # noqa: SLF001
    assert isinstance(actor, DiffusionActor) and actor.steps == 5
    obs = algo._buf.sample_batch()['obs']  # noqa: SLF001
    actions = algo._f_actions(obs)  # noqa: SLF001
    assert actions.shape == (5, obs.shape[0], 1) and actions.requires_grad
    # the soft target: r + gamma (1 - done) min Q'(s', a'), no -alpha log pi (alpha is 50 here)
    data = algo._buf.sample_batch()  # noqa: SLF001
    torch.manual_seed(0)
    target = algo._reward_critic_target(data['reward'], data['done'], data['next_obs'])  # noqa: SLF001
    torch.manual_seed(0)
    with torch.no_grad():
        next_action = actor.predict(data['next_obs'])
        next_q = torch.min(*algo._actor_critic.target_reward_critic(data['next_obs'], next_action))  # noqa: SLF001
    expected = algo._critic_reward(data['reward']) + 0.99 * (1 - data['done']) * next_q  # noqa: SLF001
    assert torch.allclose(target, expected, atol=1e-6)
    log_alpha = algo._log_alpha.detach().clone()  # noqa: SLF001
    before = [p.detach().clone() for p in actor.parameters()]
    for _ in range(3):
        algo._update()  # noqa: SLF001
    assert any(not torch.equal(a, b) for a, b in zip(before, actor.parameters()))
    assert torch.equal(algo._log_alpha.detach(), log_alpha)  # noqa: SLF001
    assert algo._logger.get_stats('Value/alpha')[0] == 0.0  # noqa: SLF001
    # the score regulariser is a positive MSE at the chain's recorded step
    lam = algo._multiplier_at(obs).detach()  # noqa: SLF001
    _, a_tau, tau = actor.sample(obs, record_step=True)
    assert float(algo._score_loss(obs, lam, a_tau, tau).detach()) > 0  # noqa: SLF001


def test_sacfpi_refuses_a_diffusion_actor(tmp_path: Path) -> None:
    from omnisafe_alam.glue.config import AlamConfigError

    with pytest.raises(AlamConfigError, match=r"model_cfgs.actor_type must be one of \('gaussian_sac',\) for SACFPI"):
        build_algo('SACFPI', tmp_path, fill=1, env_id=LIMIT, model_cfgs={'actor_type': 'diffusion'})
