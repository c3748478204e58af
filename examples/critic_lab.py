"""Critic lab: is a cost critic's error the critic's, or the policy's?

Takes a trained run on a multi-step known-answer task, freezes its policy, collects a replay
buffer like training does (uniform random actions first, then the stochastic policy), and
trains a *fresh* pair of twin cost critics on it with the plugin's own target
(``functional.cost_critic_target``, mean of the twins, capped). Every ``--every`` steps it
prints how ``F_hat <= d`` classifies the task's exact feasible set and how far ``F_hat`` is from
the frozen policy's own feasibility function, estimated by Monte Carlo
(``known_answer.monte_carlo_f``). With the policy and the data out of the loop, what is left is
the critic: its output head, learning rate and target rate.

    .venv/bin/python examples/critic_lab.py RUN_DIR --output linear --lr 1e-3
    .venv/bin/python examples/critic_lab.py RUN_DIR --output softplus --lr 1e-3

Runs in about 40 s per 18k steps on one core (64-wide critics).
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

import omnisafe_alam  # noqa: F401  (registers the tasks)
from omnisafe_alam.core import functional as F
from omnisafe_alam.envs import TASKS
from omnisafe_alam.tools.known_answer import DEEP, TASK_SPECS, monte_carlo_f, score_classification
from omnisafe_alam.core.models import build_cost_critic
from omnisafe_alam.tools.runs import load_run


def collect(run, task, random_steps: int, policy_steps: int, num_envs: int, seed: int) -> dict[str, torch.Tensor]:
    """Transitions ``o, a, c, n, t`` (``n`` the true next state, ``t`` terminated) as the adapter stores them."""
    env = task(task._support_envs[0], num_envs=num_envs)
    env.set_seed(seed)
    obs, _ = env.reset()
    buf: dict[str, list[torch.Tensor]] = {key: [] for key in 'oacnt'}
    for i in range((random_steps + policy_steps) // num_envs):
        with torch.no_grad():
            if i * num_envs < random_steps:
                act = torch.rand(num_envs, task.act_dim) * 2 - 1
            else:
                act = run.actor.predict(run.normalize(obs), deterministic=False)
        nobs, _, cost, terminated, _, info = env.step(act)
        for key, value in zip('oacnt', (obs, act, cost, info['final_observation'], terminated.float())):
            buf[key].append(value)
        obs = nobs
    return {key: torch.cat(value) for key, value in buf.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('run_dir')
    parser.add_argument('--output', choices=('linear', 'softplus'), default='softplus')
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--polyak', type=float, default=0.05)
    parser.add_argument('--steps', type=int, default=18000)
    parser.add_argument('--every', type=int, default=3000)
    parser.add_argument('--width', type=int, default=64)
    parser.add_argument('--random-steps', type=int, default=4000)
    parser.add_argument('--policy-steps', type=int, default=16000)
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    run = load_run(args.run_dir)
    task, spec = TASKS[run.env_id], TASK_SPECS[run.env_id]
    gamma, d = float(run.cfgs['algo_cfgs']['gamma']), float(run.cfgs['alam_cfgs']['d'])
    buf = collect(run, task, args.random_steps, args.policy_steps, 50, args.seed)
    print(f'{run.env_id}: {len(buf["o"])} transitions, cost on {buf["c"].mean():.3f} of them')

    def policy(obs: torch.Tensor) -> torch.Tensor:
        return run.actor.predict(run.normalize(obs), deterministic=False)

    grid = spec.state_grid
    margin = spec.margin(grid)
    feasible = margin >= 0
    truth = monte_carlo_f(task, policy, grid, gamma, samples=16)
    print(f'policy\'s own F (Monte Carlo): accuracy {score_classification(truth, feasible, d)["accuracy"]:.3f}')

    env = task(task._support_envs[0])
    critic = build_cost_critic(
        env.observation_space, env.action_space, [args.width] * 2, 'relu', 'kaiming_uniform', args.output,
    )
    target = copy.deepcopy(critic).requires_grad_(False)
    optimizer = torch.optim.Adam(critic.parameters(), lr=args.lr)
    start = time.time()
    for step in range(1, args.steps + 1):
        idx = torch.randint(len(buf['o']), (256,))
        obs, act, cost, nxt, term = (buf[key][idx] for key in 'oacnt')
        with torch.no_grad():
            y = F.cost_critic_target(
                cost, term, torch.stack(target(nxt, policy(nxt))), gamma, pessimism=0.0, value_max=1 / (1 - gamma),
            )
        loss = sum(nn.functional.mse_loss(q, y) for q in critic(obs, act))
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(critic.parameters(), 40.0)
        optimizer.step()
        with torch.no_grad():
            for t_param, param in zip(target.parameters(), critic.parameters()):
                t_param.mul_(1 - args.polyak).add_(args.polyak * param)
        if step % args.every == 0:
            with torch.no_grad():
                acts = policy(grid.expand(64, *grid.shape))
                f_hat = F.f_hat(torch.stack(critic(grid.expand(64, *grid.shape), acts)))
            score = score_classification(f_hat, feasible, d)
            error = (f_hat - truth)[feasible]
            print(
                f'step {step:6d}  accuracy {score["accuracy"]:.3f}  F_hat deep {f_hat[margin >= DEEP].mean():.3f}  '
                f'bias {error.mean():+.3f}  |error| {error.abs().mean():.3f} (feasible states)  '
                f'{time.time() - start:.0f}s',
                flush=True,
            )


if __name__ == '__main__':
    main()
