"""Replay critic lab: can the cost critic learn a run's own costs, and how fast?

Takes a finished (or stopped) plugin run on any environment, its replay buffer from a full
checkpoint (``state/step-N.pt``) and its policy from ``torch_save/epoch-M.pt``, freezes the
policy, and regresses twin cost critics on that buffer with the plugin's own target
(``functional.cost_critic_target``: indicator cost, mean of the twins, capped bootstrap,
Polyak target), for several heads, learning rates and starting points. The reference is the
Monte-Carlo discounted cost-to-go of the stored trajectories (episodes are read from the
buffer's observation discontinuities), on the newest transitions (close to the frozen policy)
early enough in their episode that the time limit cuts off less than ``gamma**margin``.

    .venv/bin/python scripts/replay_critic_lab.py RUN_DIR --state step-90000.pt --policy epoch-45.pt
    .venv/bin/python scripts/replay_critic_lab.py RUN_DIR --state step-90000.pt --policy epoch-25.pt \
        --upto 50000 --steps 10000 --every 1000 --settings run-softplus:1e-4,run-softplus:1e-3,fresh-softplus:1e-4

(the second: the buffer and policy as they were at 50k steps; docs/algorithms.md quotes both on
SACALaM seed 1 of the Circle results grid, trained before ``cost_critic_floor``). Settings are
``START-HEAD[-sS]:LR`` with START ``run`` (the run's own critics) or ``fresh``, HEAD
``softplus`` or ``linear``; ``-sS`` trains a softplus head by ``functional.bounded_slope_loss``
with min_slope S (``-s1``: the matching loss) instead of the MSE; ``-wW`` gives a fresh critic
hidden layers W wide instead of the run's. The discount is ``F``'s (``alam_cfgs.cost_gamma``). The lab's critics have no floor: it shows what the head does by itself.

Prints, every ``--every`` steps and for each setting, the critics' mean ``Q_c`` on that slice
against the Monte-Carlo mean, their correlation, and the mean pre-softplus output.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces
from torch import nn

from omnisafe_alam.core import functional as F
from omnisafe_alam.glue.checkpoint import load_state_file
from omnisafe_alam.core.models import NonNegativeCritic, build_cost_critic
from omnisafe_alam.tools.runs import load_run


def episode_starts(obs: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Indices where a stored transition does not continue the previous one."""
    jump = (obs[1:] - next_obs[:-1]).abs().amax(dim=-1) > 1e-5
    return torch.cat([torch.tensor([0]), jump.nonzero().flatten() + 1])


def cost_to_go(cost: torch.Tensor, starts: torch.Tensor, gamma: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Discounted cost-to-go of every transition within its episode, and steps left in it."""
    out = torch.zeros_like(cost)
    left = torch.zeros_like(cost)
    ends = torch.cat([starts[1:], torch.tensor([len(cost)])])
    for s, e in zip(starts.tolist(), ends.tolist()):
        acc = 0.0
        for t in range(e - 1, s - 1, -1):
            acc = float(cost[t]) + gamma * acc
            out[t] = acc
            left[t] = e - t
    return out, left


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('run_dir')
    parser.add_argument('--state', required=True, help='state/step-N.pt (the replay buffer)')
    parser.add_argument('--policy', required=True, help='torch_save/epoch-M.pt (policy and cost critics)')
    parser.add_argument('--steps', type=int, default=20000)
    parser.add_argument('--every', type=int, default=2500)
    parser.add_argument('--recent', type=int, default=10000, help='newest transitions in the reference slice')
    parser.add_argument('--margin', type=int, default=400, help='steps left in the episode for the slice')
    parser.add_argument('--settings', default='run-softplus:1e-4,run-softplus:1e-3,fresh-softplus:1e-4,fresh-softplus:1e-3,fresh-linear:1e-4,fresh-linear:1e-3')
    parser.add_argument('--upto', type=int, default=0, help='use only the first N transitions (the buffer as it was at step N)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--threads', type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    run_dir = Path(args.run_dir)
    run = load_run(run_dir, args.policy)
    cfgs = run.cfgs
    alam = cfgs['alam_cfgs']
    # F's discount (alam_cfgs.cost_gamma; 0 or absent: the reward's)
    gamma = F.cost_discount(float(alam.get('cost_gamma', 0.0)), cfgs['algo_cfgs']['gamma'])
    data = load_state_file(run_dir / 'state' / args.state)['buffer']['data']
    if args.upto:
        data = {key: value[: args.upto] for key, value in data.items()}
    obs, act, nobs = (data[k].squeeze(1) for k in ('obs', 'act', 'next_obs'))
    cost = data['cost'].squeeze(1)
    if alam['cost_indicator']:
        cost = (cost > 0).float()
    done = data['done'].squeeze(1)
    starts = episode_starts(obs, nobs)
    mc, left = cost_to_go(cost, starts, gamma)
    n = len(cost)
    idx = torch.arange(n)
    ref = (idx >= n - args.recent) & (left >= args.margin)
    print(f'buffer {n} transitions, {len(starts)} episodes, cost rate {cost.mean():.3f} (newest {args.recent}: '
          f'{cost[-args.recent:].mean():.3f}); reference slice {int(ref.sum())} transitions, MC mean {mc[ref].mean():.2f}, '
          f'std {mc[ref].std():.2f}; run critic mean {twin_mean(run.cost_critic, obs[ref], act[ref]).mean():.3f}')

    model = cfgs['model_cfgs']
    obs_space = spaces.Box(-np.inf, np.inf, (obs.shape[1],))
    act_space = spaces.Box(-1.0, 1.0, (act.shape[1],))
    polyak = alam['cost_polyak'] or cfgs['algo_cfgs']['polyak']
    value_max = alam['cost_max'] / (1 - gamma) if alam['cost_max'] > 0 else float('inf')
    batch = cfgs['algo_cfgs']['batch_size']
    d = float(alam['d'])
    settings = []
    for item in args.settings.split(','):
        name, lr = item.split(':')
        start, head, *opts = name.split('-')
        loss = [o for o in opts if o.startswith('s')]
        width = next((int(o[1:]) for o in opts if o.startswith('w')), None)
        hidden = [width] * len(model['critic']['hidden_sizes']) if width else model['critic']['hidden_sizes']
        torch.manual_seed(args.seed)
        if start == 'run':
            critic = copy.deepcopy(run.cost_critic)
            if head == 'linear':
                critic = critic.critic
        else:
            critic = build_cost_critic(obs_space, act_space, hidden, model['critic']['activation'],
                                       model['weight_initialization_mode'], head)
        critic.train()
        target = copy.deepcopy(critic)
        opt = torch.optim.Adam(critic.parameters(), lr=float(lr))
        settings.append((item, critic, target, opt, float(loss[0][1:]) if loss else 0.0))

    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for step in range(args.steps + 1):
        if step % args.every == 0:
            for item, critic, _, _, _ in settings:
                q = twin_mean(critic, obs[ref], act[ref])
                corr = torch.corrcoef(torch.stack([q, mc[ref]]))[0, 1]
                pre = pre_softplus(critic, obs[ref], act[ref])
                safe = mc[ref] < d
                print(f'{step:6d} {item:20s} mean Q_c {q.mean():7.3f}  MC {mc[ref].mean():6.2f}  corr {corr:6.3f}  '
                      f'mean |Q_c-MC| {(q - mc[ref]).abs().mean():6.2f}  pre-head {pre:7.2f}  '
                      f'MC<d: {float(safe.float().mean()):.2f} of states, Q_c {q[safe].mean():.3f}, Q_c<=d {float((q[safe] <= d).float().mean()):.2f}  '
                      f'({time.time() - t0:.0f} s)', flush=True)
        if step == args.steps:
            break
        b = torch.randint(n, (batch,), generator=gen)
        with torch.no_grad():
            next_action = run.actor(nobs[b]).sample()
        for _, critic, target, opt, min_slope in settings:
            with torch.no_grad():
                y = F.cost_critic_target(cost[b], done[b], torch.stack(target(nobs[b], next_action)), gamma,
                                         pessimism=alam['cost_target_pessimism'], value_max=value_max)
            if min_slope > 0:
                loss = F.bounded_slope_loss(torch.stack(critic.pre_activations(obs[b], act[b])), y, min_slope)
            else:
                q1, q2 = critic(obs[b], act[b])
                loss = nn.functional.mse_loss(q1, y) + nn.functional.mse_loss(q2, y)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(critic.parameters(), cfgs['algo_cfgs']['max_grad_norm'])
            opt.step()
            with torch.no_grad():
                for p, tp in zip(critic.parameters(), target.parameters()):
                    tp.mul_(1 - polyak).add_(p, alpha=polyak)


def twin_mean(critic: nn.Module, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack(critic(obs, act)).mean(0)


def pre_softplus(critic: nn.Module, obs: torch.Tensor, act: torch.Tensor) -> float:
    """Mean output before the softplus head (the output itself for a linear head)."""
    inner = critic.critic if isinstance(critic, NonNegativeCritic) else critic
    with torch.no_grad():
        return float(torch.stack(inner(obs, act)).mean())


if __name__ == '__main__':
    main()
