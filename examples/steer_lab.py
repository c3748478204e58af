"""Does the cost critic's action gradient point away from the hazards? (issue 22)

The state-wise penalty reaches the actor only through grad_a F_hat(x, a), the slope of the twin cost
critics in the action. If that slope is informative, stepping the deployed (deterministic) action
against it lowers the realised cost; if it is not, the penalty moves the actor without buying
safety. This lab measures it on a finished run's final policy and cost critics, with no training
(omnisafe_alam.tools.steer):

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

from omnisafe_alam.tools.runs import load_run
from omnisafe_alam.tools.steer import steer_rollouts

args = sys.argv[1:]
bias = 0.0
if args[:1] == ['--bias']:
    bias, args = float(args[1]), args[2:]
if not args:
    sys.exit(__doc__)
run_dir = args[0]
episodes = int(args[1]) if len(args) > 1 else 10
steps = [float(v) for v in args[2:]] or [0.1, 0.25, 0.5]
torch.set_num_threads(1)
run = load_run(run_dir)
if run.cost_critic is None:
    sys.exit(f'{run_dir} ({run.algo}) has no twin cost critics: nothing to steer with')
env = make(run.env_id, num_envs=1, **(run.cfgs.get('env_cfgs') or {}))

# the newest epoch-N.pt: on a run still training that may be an early, untrained policy
print(f'{run_dir}: {run.algo} on {run.env_id}, checkpoint {run.checkpoint.name}, '
      f'{episodes} deterministic episodes per setting, action bias {bias:g}')
print(f'{"setting":>16} {"return":>8} {"unsafe/ep":>10} {"F_hat":>7}')
settings = [(0.0, 'critic', 'policy')]
settings += [(eps, direction, f'{direction} {eps:g}') for eps in steps for direction in ('critic', 'random')]
for eps, direction, name in settings:
    res = steer_rollouts(run, env, episodes, eps, direction, bias)
    print(f'{name:>16} {res.episode_return:8.2f} {res.unsafe_steps:10.1f} {res.f_hat:7.3f}', flush=True)
