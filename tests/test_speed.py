"""The fast paths compute exactly what the plain reference paths compute (issue 9, item 4).

Two copies of an algorithm are built from the same seed; one takes the fast step, the other
the reference step, on the same batch and the same RNG stream; every updated parameter, every
optimizer state and every logged value must agree bit for bit. Fused Adam, the one fast path that
rounds differently, is checked against PyTorch's per-tensor loop to float tolerance.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
from omnisafe.algorithms.off_policy.sac import SAC
from torch import nn

from conftest import build_algo


ENV = 'StatewiseBraking-v0'  # builds in milliseconds; the paths do not depend on the task


def _pair(algo: str, tmp_path: Path) -> tuple[Any, Any]:
    # OmniSafe's reward-critic step (the reference) takes SAC's alpha as it is: compare the paths
    # at the penalty weight 1, where the state-wise family's temperature is that alpha too
    extra = {'alam_cfgs': {'penalty_scale': 'none'}} if algo != 'SACFPI' else {}
    return (
        build_algo(algo, tmp_path / 'fast', env_id=ENV, **extra),
        build_algo(algo, tmp_path / 'reference', env_id=ENV, **extra),
    )


def _state(algo: Any) -> dict[str, torch.Tensor]:
    from omnisafe_alam.core.training import _training_parts

    modules, optimizers, _ = _training_parts(algo)
    out = {f'{n}.{k}': v for n, m in modules.items() for k, v in m.state_dict().items()}
    for name, opt in optimizers.items():
        for idx, state in opt.state_dict()['state'].items():
            out.update({f'{name}.{idx}.{k}': v for k, v in state.items() if isinstance(v, torch.Tensor)})
    out['log_alpha'] = algo._log_alpha.detach()
    return out


def _assert_identical(a: Any, b: Any) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def _logged(algo: Any) -> dict[str, list[float]]:
    return {k: list(v) for k, v in algo._logger._data.items() if len(v)}


@pytest.mark.parametrize('algo_name', ['SACALaM', 'SACFPI'])
def test_one_backward_for_both_critics_equals_the_two_separate_steps(algo_name: str, tmp_path: Path) -> None:
    fast, reference = _pair(algo_name, tmp_path)
    _assert_identical(fast, reference)
    data = fast._buf.sample_batch()
    batch = (data['obs'], data['act'], data['reward'], data['cost'], data['done'], data['next_obs'])
    obs, act, reward, cost, done, next_obs = batch
    for _ in range(3):  # Adam's moments matter from the second step on
        torch.manual_seed(7)
        fast._update_critics(*batch)
        torch.manual_seed(7)
        SAC._update_reward_critic(reference, obs, act, reward, done, next_obs)
        reference._update_cost_critic(obs, act, cost, done, next_obs)
    _assert_identical(fast, reference)
    assert _logged(fast) == _logged(reference)
    # and the steps moved both critics
    fresh = _state(build_algo(algo_name, tmp_path / 'fresh', env_id=ENV))
    moved = {k.split('.')[1] for k, v in _state(fast).items() if k.startswith('_actor_critic.') and not torch.equal(v, fresh[k])}
    assert 'reward_critic' in moved and ({'cost_critic', 'feasibility_critic'} & moved)


@pytest.mark.parametrize('algo_name', ['SACALaM', 'SACFPI'])
def test_written_temperature_gradient_equals_autograd(algo_name: str, tmp_path: Path) -> None:
    from omnisafe_alam.core.training import StatewiseOffPolicy

    fast, reference = _pair(algo_name, tmp_path)
    obs = fast._buf.sample_batch()['obs']
    for _ in range(3):
        torch.manual_seed(11)
        StatewiseOffPolicy._update_actor(fast, obs)
        torch.manual_seed(11)
        with reference._frozen_critics():
            SAC._update_actor(reference, obs)  # OmniSafe's actor step, then alpha by autograd
    _assert_identical(fast, reference)
    assert _logged(fast) == _logged(reference)
    assert float(fast._log_alpha.detach()) != 0.0  # the temperature moved


def test_foreach_polyak_equals_the_per_tensor_formula() -> None:
    from omnisafe_alam.core.models import PolyakPairs, polyak_step

    torch.manual_seed(0)
    sources = [nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)) for _ in range(2)]
    targets = [copy.deepcopy(s) for s in sources]
    for t in targets:
        for p in t.parameters():
            p.data.normal_()
    reference = copy.deepcopy(targets)
    pairs = PolyakPairs(*zip(sources, targets))
    for tau in (0.005, 0.05, 0.3):
        pairs.step(tau)
        for s, r in zip(sources, reference):
            polyak_step(s, r, tau)
    for t, r in zip(targets, reference):
        for a, b in zip(t.parameters(), r.parameters()):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match='same parameter shapes'):
        PolyakPairs((sources[0], nn.Linear(5, 3)))


def test_fast_adam_matches_the_per_tensor_loop(tmp_path: Path) -> None:
    """The plugin's optimizers run fused Adam; it stays within float32 rounding of PyTorch's
    per-tensor loop over a training run (the foreach path is bit-identical to the loop)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 1))
    nets = [net, copy.deepcopy(net), copy.deepcopy(net)]
    opts = [
        torch.optim.Adam(nets[0].parameters(), lr=1e-3),
        torch.optim.Adam(nets[1].parameters(), lr=1e-3, foreach=True),
        torch.optim.Adam(nets[2].parameters(), lr=1e-3, fused=True),
    ]
    start = copy.deepcopy(net)
    for _ in range(200):
        x = torch.randn(32, 6)
        for net, opt in zip(nets, opts):
            opt.zero_grad()
            net(x).pow(2).mean().backward()
            opt.step()
    for loop, foreach, fused, first in zip(*(n.parameters() for n in nets), start.parameters()):
        assert torch.equal(loop, foreach)
        moved = (loop - first).abs().max()
        assert moved > 1e-3  # trained
        # fused differs by rounding only: far below how far training moved the weights
        assert (loop - fused).abs().max() <= 1e-5 * moved + 1e-7

    # and the algorithms use it (CPU supports fused Adam)
    algo = build_algo('SACALaM', tmp_path, fill=0, env_id=ENV)
    from omnisafe_alam.core.training import _training_parts

    groups = [g for opt in _training_parts(algo)[1].values() for g in opt.param_groups]
    assert len(groups) >= 4 and all(g['fused'] and not g['foreach'] for g in groups)
