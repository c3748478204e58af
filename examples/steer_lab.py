"""Does the cost critic's action gradient point away from the hazards? (issue 22)

The state-wise penalty reaches the actor only through grad_a F_hat(x, a), the slope of the twin cost
critics in the action. If that slope is informative, stepping the deployed (deterministic) action
against it lowers the realised cost; if it is not, the penalty moves the actor without buying
safety. This lab measures it on a finished run's final policy and cost critics, with no training:

    a_eps = clip(a - eps * u, -1, 1),   u = grad_a F_hat(x, a) / |grad_a F_hat(x, a)|

for each step size eps, beside a control that steps the same distance in a random direction (a
fresh one each step), so that what any perturbation does is not credited to the critic. The same
evaluation episodes (seeds 10000 + i, as `omnisafe-alam compare`) for every setting.

usage: python examples/steer_lab.py [--bias B] RUN_DIR [EPISODES] [EPS ...]
  --bias B  add B to every action of the policy before any step (default 0): a positive control
            that makes a safe policy unsafe (on StatewiseBraking-v0, B > 0 accelerates toward the
            hazard), so that whether the slope steers back to safety can be seen
  RUN_DIR   a plugin run with twin cost critics (SACALaM, SACLagNet, ASAC, SACALaMGA)
  EPISODES  evaluation episodes per setting (default 10)
  EPS       step sizes in the [-1, 1] action box (default 0.1 0.25 0.5)
prints one row per setting: return, unsafe steps per episode, and the mean F_hat at the visited
states (the critic's own rating of where the policy goes).
"""
import sys

import torch

from omnisafe.envs.core import make

from omnisafe_alam.core import functional as F
from omnisafe_alam.tools.runs import load_run

args = sys.argv[1:]
bias = 0.0
if args[:1] == ['--bias']:
    bias, args = float(args[1]), args[2:]
run_dir = args[0]
episodes = int(args[1]) if len(args) > 1 else 10
steps = [float(v) for v in args[2:]] or [0.1, 0.25, 0.5]
torch.set_num_threads(1)
run = load_run(run_dir)
if run.cost_critic is None:
    sys.exit(f'{run_dir} ({run.algo}) has no twin cost critics: nothing to steer with')
pessimism = float(run.cfgs.get('alam_cfgs', {}).get('f_hat_pessimism', 1.0))
env = make(run.env_id, num_envs=1, **(run.cfgs.get('env_cfgs') or {}))
low = torch.as_tensor(env.action_space.low)
high = torch.as_tensor(env.action_space.high)


def f_hat_and_slope(obs: torch.Tensor, action: torch.Tensor) -> tuple[float, torch.Tensor]:
    """F_hat at (x, a) and its gradient in a, the direction the penalty pushes the actor against."""
    action = action.detach().requires_grad_(True)
    q_c = run.cost_critic(obs.reshape(1, 1, -1), action.reshape(1, 1, -1))  # (K=1, B=1)
    value = F.f_hat(torch.stack(q_c), pessimism).sum()
    (grad,) = torch.autograd.grad(value, action)
    return float(value.detach()), grad


def rollout(eps: float, direction: str) -> tuple[float, float, float]:
    gen = torch.Generator().manual_seed(0)
    rets, unsafe, f_vals = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + episode)
        ret = bad = 0.0
        done = False
        while not done:
            x = run.normalize(obs.float())
            with torch.no_grad():
                act = (run.actor.predict(x, deterministic=True).squeeze(0) + bias).clamp(-1.0, 1.0)
            f_val, grad = f_hat_and_slope(x, act)
            f_vals.append(f_val)
            if eps > 0:
                u = grad if direction == 'critic' else torch.randn(grad.shape, generator=gen)
                act = (act - eps * u / u.norm().clamp_min(1e-12)).clamp(-1.0, 1.0)
            obs, reward, cost, terminated, truncated, _ = env.step(low + (act + 1.0) * 0.5 * (high - low))
            ret += float(reward)
            bad += float(float(cost) > 0)
            done = bool(terminated) or bool(truncated)
        rets.append(ret)
        unsafe.append(bad)
    n = len(rets)
    return sum(rets) / n, sum(unsafe) / n, sum(f_vals) / len(f_vals)


# the newest epoch-N.pt: on a run still training that may be an early, untrained policy
print(f'{run_dir}: {run.algo} on {run.env_id}, checkpoint {run.checkpoint.name}, '
      f'{episodes} deterministic episodes per setting, action bias {bias:g}')
print(f'{"setting":>16} {"return":>8} {"unsafe/ep":>10} {"F_hat":>7}')
ret, bad, f_mean = rollout(0.0, 'critic')
print(f'{"policy":>16} {ret:8.2f} {bad:10.1f} {f_mean:7.3f}', flush=True)
for eps in steps:
    for direction in ('critic', 'random'):
        ret, bad, f_mean = rollout(eps, direction)
        print(f'{direction + " " + str(eps):>16} {ret:8.2f} {bad:10.1f} {f_mean:7.3f}', flush=True)
