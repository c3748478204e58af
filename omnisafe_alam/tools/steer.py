"""Does the cost critics' action slope point away from the hazards? (issue 22's steer lab)

The state-wise penalty reaches the actor only through ``grad_a F_hat(x, a)``, the slope of the
twin cost critics in the action. If that slope is informative, stepping the deployed
(deterministic) action against it lowers the realised cost; if it is not, the penalty moves the
actor without buying safety. :func:`steer_rollouts` measures it on a finished run with no
training::

    a_eps = clip(a - eps * u, -1, 1),   u = grad_a F_hat(x, a) / |grad_a F_hat(x, a)|

beside a control that steps the same distance in a random direction (a fresh one each step), so
that what any perturbation does is not credited to the critic. ``bias`` is a positive control:
added to every policy action before the step, it makes a safe policy unsafe, so that whether the
slope steers it back can be seen. Actions live in the actor's ``[-1, 1]`` box, mapped affinely onto
the environment's action space as OmniSafe's ``ActionScale`` wrapper does in training.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

from omnisafe_alam.core import functional as F
from omnisafe_alam.tools.runs import LoadedRun

__all__ = ['SteerResult', 'steer_rollouts', 'unfinished_note']


@dataclass(frozen=True)
class SteerResult:
    """Means over the evaluation episodes of one setting."""

    episode_return: float
    #: steps with a positive cost, per episode
    unsafe_steps: float
    #: the critics' own ``F_hat`` at the visited states and deployed actions, before any step
    f_hat: float


def steer_rollouts(
    run: LoadedRun,
    env: object,
    episodes: int,
    eps: float,
    direction: Literal['critic', 'random'] = 'critic',
    bias: float = 0.0,
    seed: int = 10_000,
) -> SteerResult:
    """Deterministic rollouts of ``run``'s policy, each action stepped by ``eps`` (module doc).

    Args:
        run: a run with twin cost critics (SACALaM, SACLagNet, ASAC, SACALaMGA).
        env: an OmniSafe environment of the run's task (``omnisafe.envs.core.make``, one env).
        episodes: evaluation episodes; episode ``i`` is reset with seed ``seed + i`` (as
            ``omnisafe-alam compare``), the same for every setting.
        eps: step size in the ``[-1, 1]`` action box; 0 is the (biased) policy itself.
        direction: ``'critic'`` (against the slope) or ``'random'`` (the control).
        bias: added to every policy action before the step (the positive control).
        seed: seed of the first episode.
    """
    if run.cost_critic is None:
        raise ValueError(f'{run.run_dir} ({run.algo}) has no twin cost critics: nothing to steer with')
    if direction not in ('critic', 'random'):
        raise ValueError(f"direction must be 'critic' or 'random', got {direction!r}")
    if episodes < 1 or eps < 0:
        raise ValueError(f'need episodes >= 1 and eps >= 0, got {episodes} and {eps}')
    # the run's own combination of the twins; runs saved before the key existed used the paper's max
    pessimism = float(run.cfgs.get('alam_cfgs', {}).get('f_hat_pessimism', 1.0))
    low = torch.as_tensor(env.action_space.low)
    high = torch.as_tensor(env.action_space.high)
    gen = torch.Generator().manual_seed(0)
    returns, unsafe, f_values = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed + episode)
        ret = bad = 0.0
        done = False
        while not done:
            x = run.normalize(obs.float())
            with torch.no_grad():
                act = (run.actor.predict(x, deterministic=True).squeeze(0) + bias).clamp(-1.0, 1.0)
            act = act.detach().requires_grad_(True)
            q_c = run.cost_critic(x.reshape(1, 1, -1), act.reshape(1, 1, -1))  # (K=1, B=1) each
            value = F.f_hat(torch.stack(q_c), pessimism).sum()
            (grad,) = torch.autograd.grad(value, act)
            f_values.append(float(value.detach()))
            act = act.detach()
            if eps > 0:
                u = grad if direction == 'critic' else torch.randn(grad.shape, generator=gen)
                act = (act - eps * u / u.norm().clamp_min(1e-12)).clamp(-1.0, 1.0)
            obs, reward, cost, terminated, truncated, _ = env.step(low + (act + 1.0) * 0.5 * (high - low))
            ret += float(reward)
            bad += float(float(cost) > 0)
            done = bool(terminated) or bool(truncated)
        returns.append(ret)
        unsafe.append(bad)
    return SteerResult(
        episode_return=sum(returns) / episodes,
        unsafe_steps=sum(unsafe) / episodes,
        f_hat=sum(f_values) / len(f_values),
    )


def unfinished_note(run: LoadedRun) -> str | None:
    """A warning when ``run``'s checkpoint is not its last epoch (a run still training, or killed).

    The newest ``epoch-N.pt`` of a run that is still training can be the untrained ``epoch-0``:
    its critics and policy say nothing about the finished run's.
    """
    try:
        total = int(run.cfgs['train_cfgs']['total_steps'])
        per_epoch = int(run.cfgs['algo_cfgs']['steps_per_epoch'])
        epoch = int(run.checkpoint.stem.split('-')[-1])
    except (KeyError, TypeError, ValueError):
        return None
    final = total // per_epoch
    if epoch >= final:
        return None
    return (f'warning: {run.checkpoint.name} is not the final checkpoint (epoch-{final}.pt for '
            f'{total} steps); the run may still be training')
