"""How much does one action move the feasibility function, against how much the state does?

The state-wise penalty reaches the actor only through the cost critics' action slope,
``grad_a F_hat(x, a)``. That slope can only steer if the *true* ``F`` itself changes with the
action: if, within the horizon of ``gamma_c``, one action barely moves the discounted cost while
the state decides it, then a critic can rank states well and its slope still carries little
safety (issue 22's reading of SafetyPointGoal1-v0). :func:`branch_feasibility` measures the true
``F`` by branching the environment, with no training and no critic in the loop:

at states ``x`` along the deterministic policy's episodes, for a set of first actions ``a``
(the policy's own, that action moved by ``eps`` against and along the critic's slope, and by
``eps`` along each action axis), restore ``x``, take ``a``, follow the deterministic policy for
``horizon`` steps and sum

    F_mc(x, a) = sum_{t < H} gamma_c^t [c_t > 0]

(the cost indicator, as the cost critics learn it with ``alam_cfgs.cost_indicator``; an episode
that ends inside a branch adds nothing after its end). The critics' ``Q_c`` at the same
``(x, a)`` is recorded beside it. :func:`summarize_branches` turns both into the numbers the
reading needs (its docstring). The continuation is the deterministic policy, not the stochastic
one ``F`` is defined under (its std is small on the runs measured: 0.08 on Goal).

Environments are restored exactly: the plugin's tasks through their ``state_dict``, a
Safety-Gymnasium task through its MuJoCo data, goal, layout, random state and step counters
(:class:`EnvSnapshot`).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from omnisafe_alam.core import functional as F
from omnisafe_alam.tools.runs import LoadedRun

__all__ = ['BranchData', 'EnvSnapshot', 'branch_feasibility', 'summarize_branches', 'horizon_for']


def horizon_for(gammas: Sequence[float], tail: float = 0.01) -> int:
    """Branch length at which the largest discount's weight has fallen to ``tail``."""
    gamma = max(gammas)
    if not 0.0 < gamma < 1.0 or not 0.0 < tail < 1.0:
        raise ValueError(f'need every gamma in (0, 1) and tail in (0, 1), got {list(gammas)} and {tail}')
    return int(math.ceil(math.log(tail) / math.log(gamma)))


class EnvSnapshot:
    """Everything the next steps of one OmniSafe environment depend on, to restore it exactly.

    Supported: the plugin's tasks (:class:`~omnisafe_alam.envs.base.VectorTask`, their own
    ``state_dict``) and OmniSafe's Safety-Gymnasium environments with one env (the Builder's
    MuJoCo data, goal position, layout, random state, step counters and the time limit's count).
    """

    def __init__(self, env: Any) -> None:
        self._env = env
        if hasattr(env, 'state_dict') and hasattr(env, 'load_state_dict'):
            self._kind = 'task'
            self._state = copy.deepcopy(env.state_dict())
            return
        self._kind = 'safety_gymnasium'
        self._wrappers, builder = _unwrap(env)
        task = builder.task
        self._builder = builder
        self._data = {k: np.copy(getattr(task.data, k)) for k in _PHYSICS}
        self._goal_body = task.model.body('goal').pos.copy() if _has_body(task.model, 'goal') else None
        self._world_goal = copy.deepcopy(task.world_info.world_config_dict.get('geoms', {}).get('goal'))
        self._layout = copy.deepcopy(task.world_info.layout)
        self._rng = task.random_generator.random_generator.get_state()
        self._task_attrs = {k: copy.deepcopy(getattr(task, k)) for k in ('last_dist_goal',) if hasattr(task, k)}
        self._builder_attrs = {k: getattr(builder, k) for k in ('steps', 'cost', 'terminated', 'truncated')}
        self._elapsed = [(w, w._elapsed_steps) for w in self._wrappers if hasattr(w, '_elapsed_steps')]

    def restore(self) -> None:
        """Put the environment back where the snapshot was taken (repeatable)."""
        import mujoco

        if self._kind == 'task':
            self._env.load_state_dict(copy.deepcopy(self._state))
            return
        builder = self._builder
        task = builder.task
        for key, value in self._data.items():
            if key == 'time':
                task.data.time = float(value)
            else:
                getattr(task.data, key)[...] = value
        if self._goal_body is not None:
            task.model.body('goal').pos[:] = self._goal_body
        if self._world_goal is not None:
            task.world_info.world_config_dict['geoms']['goal'] = copy.deepcopy(self._world_goal)
        layout = copy.deepcopy(self._layout)
        task.world_info.layout = layout
        task.random_generator.layout = layout
        task.random_generator.random_generator.set_state(self._rng)
        for key, value in self._task_attrs.items():
            setattr(task, key, copy.deepcopy(value))
        for key, value in self._builder_attrs.items():
            setattr(builder, key, value)
        for wrapper, elapsed in self._elapsed:
            wrapper._elapsed_steps = elapsed
        mujoco.mj_forward(task.model, task.data)


#: the MuJoCo data a step reads (MuJoCo 2.3 has no ``mj_getState``); ``mj_forward`` recomputes the rest
_PHYSICS = ('time', 'qpos', 'qvel', 'act', 'qacc_warmstart', 'ctrl', 'qfrc_applied', 'xfrc_applied',
            'mocap_pos', 'mocap_quat', 'userdata')


def _has_body(model: Any, name: str) -> bool:
    try:
        model.body(name)
    except KeyError:
        return False
    return True


def _unwrap(env: Any) -> tuple[list[Any], Any]:
    """OmniSafe's Safety-Gymnasium env down to its Builder: (the wrappers on the way, the Builder)."""
    inner = getattr(env, '_env', None)
    if inner is None or not hasattr(inner, 'unwrapped'):
        raise TypeError(f'cannot snapshot {type(env).__name__}: neither a plugin task nor a one-env Safety-Gymnasium env')
    wrappers = []
    layer = inner
    while hasattr(layer, 'env') and layer is not layer.unwrapped:
        wrappers.append(layer)
        layer = layer.env
    if not hasattr(layer, 'task'):
        raise TypeError(f'cannot snapshot {type(layer).__name__}: no Safety-Gymnasium task inside')
    return wrappers, layer


@dataclass(frozen=True)
class BranchData:
    """What :func:`branch_feasibility` measured; ``S`` states, ``C`` candidate first actions
    (index 0 the policy's own, 1 against the critic's slope, 2 along it, then ``-eps``/``+eps``
    along each action axis), ``G`` discounts."""

    gammas: tuple[float, ...]
    #: ``(S, C, G)`` realised discounted cost indicator of each branch
    f_mc: np.ndarray
    #: ``(S, C)`` the run's ``Q_c`` (twins combined as its ``F_hat``) at the same state and action
    q_c: np.ndarray
    #: ``(S, C)`` how far each candidate actually moved from the policy's action (after clipping)
    moved: np.ndarray


def branch_feasibility(
    run: LoadedRun,
    env: Any,
    states: int,
    gammas: Sequence[float] = (0.8, 0.95),
    eps: float = 0.5,
    stride: int = 10,
    horizon: int | None = None,
    bias: float = 0.0,
    seed: int = 10_000,
) -> BranchData:
    """Branch the environment at ``states`` states of the deterministic policy's episodes (module doc).

    Args:
        run: a run with twin cost critics.
        env: an OmniSafe environment of the run's task with one env (``omnisafe.envs.core.make``).
        states: how many states to branch at; every ``stride``-th step of episodes reset with
            seeds ``seed``, ``seed + 1``, ... (as ``omnisafe-alam compare``).
        gammas: discounts of ``F``; the branches are ``horizon_for(gammas)`` long unless ``horizon``.
        eps: distance of each moved first action from the policy's, in the ``[-1, 1]`` box.
        bias: added to every policy action, in the episodes and the branches alike (the steer
            lab's positive control: it brings a safe policy's states near the hazards).
    """
    if run.cost_critic is None:
        raise ValueError(f'{run.run_dir} ({run.algo}) has no twin cost critics')
    if states < 1 or stride < 1 or eps <= 0:
        raise ValueError(f'need states >= 1, stride >= 1 and eps > 0, got {states}, {stride} and {eps}')
    gammas = tuple(float(g) for g in gammas)
    horizon = horizon or horizon_for(gammas)
    weights = np.array([[g**t for g in gammas] for t in range(horizon)])  # (H, G)
    pessimism = float(run.cfgs.get('alam_cfgs', {}).get('f_hat_pessimism', 1.0))
    low = torch.as_tensor(env.action_space.low)
    high = torch.as_tensor(env.action_space.high)

    def to_env(act: torch.Tensor) -> torch.Tensor:
        return low + (act + 1.0) * 0.5 * (high - low)

    def policy(obs: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            act = run.actor.predict(run.normalize(obs.float()), deterministic=True).reshape(-1)
            return (act + bias).clamp(-1.0, 1.0)

    def q_c_at(x: torch.Tensor, acts: torch.Tensor) -> torch.Tensor:
        q = run.cost_critic(x.expand(acts.shape[0], -1).unsqueeze(0), acts.unsqueeze(0))
        return F.f_hat(torch.stack(q), pessimism).reshape(-1)

    f_mc, q_c, moved = [], [], []
    episode = 0
    while len(f_mc) < states:
        obs, _ = env.reset(seed=seed + episode)
        episode += 1
        t = 0
        done = False
        while not done and len(f_mc) < states:
            act = policy(obs)
            if t % stride == 0:
                x = run.normalize(obs.float()).reshape(1, -1)
                a = act.detach().clone().requires_grad_(True)
                (grad,) = torch.autograd.grad(q_c_at(x, a.reshape(1, -1)).sum(), a)
                u = grad / grad.norm().clamp_min(1e-12)
                dirs = [torch.zeros_like(act), -u, u]
                for i in range(act.numel()):
                    e = torch.zeros_like(act)
                    e[i] = 1.0
                    dirs += [-e, e]
                cands = torch.stack([(act + eps * d).clamp(-1.0, 1.0) for d in dirs])
                with torch.no_grad():
                    q_c.append(q_c_at(x, cands).numpy())
                moved.append((cands - act).norm(dim=-1).numpy())
                snap = EnvSnapshot(env)
                rows = []
                for cand in cands:
                    snap.restore()
                    costs = np.zeros(horizon)
                    b_obs, b_act = obs, cand
                    for k in range(horizon):
                        b_obs, _, cost, term, trunc, _ = env.step(to_env(b_act))
                        costs[k] = float(float(cost) > 0)
                        if bool(term) or bool(trunc):
                            break
                        b_act = policy(b_obs)
                    rows.append(costs @ weights)
                f_mc.append(np.stack(rows))
                snap.restore()
            obs, _, _, term, trunc, _ = env.step(to_env(act))
            done = bool(term) or bool(trunc)
            t += 1
    return BranchData(gammas=gammas, f_mc=np.stack(f_mc), q_c=np.stack(q_c), moved=np.stack(moved))


def summarize_branches(f: np.ndarray, q: np.ndarray) -> dict[str, float]:
    """What one action can do to ``F`` and whether the critic knows it (issue 22's reading).

    ``f`` is the realised ``F_mc``, ``q`` the critic's ``Q_c``, both ``(S, C)``: ``S`` states, ``C``
    candidate first actions with index 0 the policy's own and index 1 the step against the
    critic's slope (:class:`BranchData`). Returns:

    - ``state_sd``: the standard deviation over states of ``F`` at the policy's action;
    - ``action_sd``: the root mean over states of the within-state variance of ``F`` over the
      candidates (the population variance, ``C`` in the denominator);
    - ``action_share``: ``action_sd^2 / (action_sd^2 + state_sd^2)``, the share of ``F``'s spread
      that one action decides;
    - ``best_gain``: the mean over states of ``F(x, a_pi) - min_c F(x, c)``, what the best
      single moved action saves;
    - ``slope_gain``: the mean of ``F(x, a_pi) - F(x, a_against_slope)``, what the penalty's
      direction saves;
    - ``random_gain``: the mean of ``F(x, a_pi) - mean_c F(x, c)`` over the candidates other than
      the policy's, what a move in no particular direction saves;
    - ``against_minus_along``: the mean of ``F(x, a_against) - F(x, a_along)``, the steps against
      and along the critic's slope (candidates 1 and 2): negative when the slope points the way
      ``F`` rises;
    - ``critic_pick_gain``: the mean of ``F(x, a_pi) - F(x, argmin_c Q_c(x, c))``;
    - ``state_corr``: the Pearson correlation over states of ``Q_c`` and ``F`` at the policy's action;
    - ``action_corr``: the mean over states where ``F`` differs between candidates of the
      within-state Pearson correlation of ``Q_c`` and ``F`` over the candidates (NaN if none);
    - ``varied_states``: the share of states where ``F`` differs between candidates.
    """
    f = np.asarray(f, dtype=float)
    q = np.asarray(q, dtype=float)
    if f.shape != q.shape or f.ndim != 2 or f.shape[1] < 3:
        raise ValueError(f'need f and q of one shape (S, C) with C >= 3, got {f.shape} and {q.shape}')
    pi = f[:, 0]
    state_var = float(pi.var())
    action_var = float(f.var(axis=1).mean())
    total = state_var + action_var
    varied = f.std(axis=1) > 1e-9
    corr = []
    for fs, qs in zip(f[varied], q[varied]):
        if qs.std() > 1e-12:
            corr.append(float(np.corrcoef(fs, qs)[0, 1]))
    pick = q.argmin(axis=1)
    state_corr = float(np.corrcoef(q[:, 0], pi)[0, 1]) if pi.std() > 1e-12 and q[:, 0].std() > 1e-12 else float('nan')
    return {
        'state_sd': math.sqrt(state_var),
        'action_sd': math.sqrt(action_var),
        'action_share': action_var / total if total > 0 else float('nan'),
        'best_gain': float((pi - f.min(axis=1)).mean()),
        'slope_gain': float((pi - f[:, 1]).mean()),
        'random_gain': float((pi - f[:, 1:].mean(axis=1)).mean()),
        'against_minus_along': float((f[:, 1] - f[:, 2]).mean()),
        'critic_pick_gain': float((pi - f[np.arange(len(f)), pick]).mean()),
        'state_corr': state_corr,
        'action_corr': float(np.mean(corr)) if corr else float('nan'),
        'varied_states': float(varied.mean()),
    }
