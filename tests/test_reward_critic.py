"""The reward critics: reward-scale invariance (alam_cfgs.penalty_scale: normalize: the same task
with every reward k times larger trains the same networks, step for step) and their LayerNorm
(alam_cfgs.reward_critic_layer_norm)."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from conftest import build_algo

ENV = 'StatewiseBraking-v0'
STEPS = 60  # gradient steps: three dual cycles at the tiny config's m_lambda of 20


def _parameters(algo) -> dict[str, torch.Tensor]:
    ac = algo._actor_critic  # noqa: SLF001
    return {
        'actor': torch.cat([p.detach().flatten() for p in ac.actor.parameters()]),
        'multiplier': torch.cat([p.detach().flatten() for p in ac.multiplier.parameters()]),
        'cost_critic': torch.cat([p.detach().flatten() for p in ac.cost_critic.parameters()]),
    }


def _pair(tmp_path: Path, penalty_scale: str, scale: float) -> tuple[dict, dict]:
    runs = []
    for k in (1.0, scale):
        algo = build_algo(
            'SACALaM', tmp_path / f'{penalty_scale}-{k}', env_id=ENV,
            env_cfgs={'reward_scale': 1.0}, alam_cfgs={'penalty_scale': penalty_scale},
        )
        runs.append(algo)
    reference = runs[0]._buf  # noqa: SLF001 the random warm-up of the first, given to both
    source = {key: value.clone() for key, value in reference.data.items()}
    for algo, k in zip(runs, (1.0, scale)):
        buf = algo._buf  # noqa: SLF001
        for key, value in source.items():
            buf.data[key].copy_(value * k if key == 'reward' else value)
        buf._ptr, buf._size = reference._ptr, reference._size  # noqa: SLF001
        algo._epoch = 1  # noqa: SLF001 past the dual warm-up: the multiplier and rho move too
        torch.manual_seed(123)
        for _ in range(STEPS):
            algo._update()  # noqa: SLF001
    return _parameters(runs[0]), _parameters(runs[1])


@pytest.mark.parametrize('scale', [0.01, 1000.0])
def test_normalize_trains_the_same_networks_at_any_reward_scale(tmp_path: Path, scale: float) -> None:
    small, large = _pair(tmp_path, 'normalize', scale)
    for name in small:
        diff = float((small[name] - large[name]).abs().max())
        assert diff < 1e-5, (name, diff)  # measured: 6e-8 at most


def test_the_penalty_weight_alone_is_not_invariant(tmp_path: Path) -> None:
    """The control: with the critics in the task's units (reward_rms) the x1000 run trains other
    networks (its critics' targets are 1000x larger, their Adam steps are not)."""
    small, large = _pair(tmp_path, 'reward_rms', 1000.0)
    assert float((small['actor'] - large['actor']).abs().max()) > 1e-3


def test_layer_norm_goes_after_each_hidden_layer_and_bounds_the_output() -> None:
    """models.add_layer_norm: the linear layers and their weights are kept, a LayerNorm follows
    each hidden one (none after the output), and the output stays within the output layer's
    bound however far the input lies from the data (without it, it grows with the input)."""
    from gymnasium import spaces
    from omnisafe.models.critic.critic_builder import CriticBuilder

    from omnisafe_alam.core.models import add_layer_norm

    torch.manual_seed(0)
    box = spaces.Box(-1.0, 1.0, (2,))
    critic = CriticBuilder(box, spaces.Box(-1.0, 1.0, (1,)), [16, 16], 'relu', 'kaiming_uniform', 2).build_critic('q')
    plain = copy.deepcopy(critic)
    add_layer_norm(critic)
    for net, before in zip(critic.net_lst, plain.net_lst):
        kinds = [type(m).__name__ for m in net[0]]
        assert kinds == ['Linear', 'LayerNorm', 'ReLU', 'Linear', 'LayerNorm', 'ReLU', 'Linear', 'Identity']
        linears = [m for m in net[0] if isinstance(m, torch.nn.Linear)]
        assert all(torch.equal(a.weight, b.weight) for a, b in zip(linears, [m for m in before[0] if isinstance(m, torch.nn.Linear)]))
    far = torch.tensor([[1e4, -1e4]]) * torch.linspace(1, 10, 10).unsqueeze(-1)
    act = torch.ones(10, 1)
    with torch.no_grad():
        bounded = torch.stack(critic(far, act)).abs().max()
        grows = torch.stack(plain(far, act)).abs().max()
        # |w_out . relu(LN(h))| <= ||w_out|| sqrt(16) with LN's initial unit gain and zero shift
        bound = max(float(net[0][-2].weight.norm() * 4 + net[0][-2].bias.abs()) for net in critic.net_lst)
    assert float(bounded) <= bound
    assert float(grows) > 100 * bound


def test_layer_norm_critics_train_and_their_target_follows(tmp_path: Path) -> None:
    """With the key on, the reward critics, their target (a copy with the same layers) and their
    optimizer (which holds the LayerNorm gains) are built together and a gradient step moves them."""
    algo = build_algo('SACALaM', tmp_path, env_id=ENV, alam_cfgs={'reward_critic_layer_norm': True})
    ac = algo._actor_critic  # noqa: SLF001
    norms = [m for m in ac.reward_critic.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 4  # two hidden layers x twin critics
    assert len([m for m in ac.target_reward_critic.modules() if isinstance(m, torch.nn.LayerNorm)]) == 4
    held = {id(p) for group in ac.reward_critic_optimizer.param_groups for p in group['params']}
    assert {id(p) for p in ac.reward_critic.parameters()} == held
    before = [p.detach().clone() for p in norms[0].parameters()]
    algo._update()  # noqa: SLF001
    assert any(not torch.equal(a, b) for a, b in zip(before, norms[0].parameters()))
