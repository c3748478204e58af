"""Reading finished runs back: config, checkpoints, networks, learning curves, stability figures."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

__all__ = [
    'LoadedRun',
    'RunError',
    'final_checkpoint',
    'load_policy',
    'load_run',
    'markdown_table',
    'settled_at',
    'stability_metrics',
    'total_variation',
]


class RunError(FileNotFoundError):
    """A run directory lacks what is asked of it (config, progress or checkpoint)."""


def _epoch_of(path: Path) -> int:
    return int(path.stem.split('-')[-1])


def final_checkpoint(run_dir: Path, checkpoint: str | None = None) -> Path:
    """The newest ``torch_save/epoch-N.pt`` of a run, or the one named."""
    save_dir = Path(run_dir) / 'torch_save'
    if checkpoint is not None:
        path = save_dir / checkpoint
        if not path.exists():
            available = sorted(p.name for p in save_dir.glob('*.pt')) if save_dir.exists() else []
            raise RunError(f'checkpoint {path} not found; available: {available}')
        return path
    candidates = sorted(save_dir.glob('epoch-*.pt'), key=_epoch_of)
    if not candidates:
        raise RunError(f'no checkpoint (torch_save/epoch-N.pt) in run directory {run_dir}')
    return candidates[-1]


@dataclass
class LoadedRun:
    """A run's config and the networks of one checkpoint, rebuilt on CPU in eval mode."""

    run_dir: Path
    cfgs: dict[str, Any]
    checkpoint: Path
    actor: torch.nn.Module
    multiplier: torch.nn.Module | None
    cost_critic: torch.nn.Module | None
    obs_normalizer: torch.nn.Module | None
    #: SAC-FPI's twin CDF critics G (its runs have no cost critics)
    feasibility_critic: torch.nn.Module | None = None
    #: ALGD's cost-critic ensemble (its runs have no twin cost critics)
    cost_ensemble: torch.nn.Module | None = None

    @property
    def algo(self) -> str:
        return self.cfgs['algo']

    @property
    def env_id(self) -> str:
        return self.cfgs['env_id']

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        """Apply the run's observation normaliser, if it trained with one."""
        if self.obs_normalizer is None:
            return obs
        return self.obs_normalizer.normalize(obs)

    def f_hat(self, obs: torch.Tensor, k: int | None = None) -> torch.Tensor:
        """``F_hat(x)`` of the saved policy and cost critics (``obs`` already normalised)."""
        from omnisafe_alam.core import functional as F

        if self.cost_critic is None:
            raise RunError(f'run {self.run_dir} ({self.algo}) has no twin cost critics saved')
        k = k or int(self.cfgs['alam_cfgs']['K'])
        with torch.no_grad():
            actions = self.sample_actions(obs, k)
            q_c = self.cost_critic(obs.expand(k, *obs.shape), actions)
            # runs saved before the key existed used the paper's max
            pessimism = float(self.cfgs.get('alam_cfgs', {}).get('f_hat_pessimism', 1.0))
            return F.f_hat(torch.stack(q_c), pessimism)


    def sample_actions(self, obs: torch.Tensor, k: int) -> torch.Tensor:
        """``k`` policy samples per state, ``(k, *obs.shape[:-1], act_dim)`` (a Gaussian actor's
        distribution, or ``k`` runs of a diffusion actor's chain)."""
        from omnisafe_alam.core.diffusion_actor import DiffusionActor

        if isinstance(self.actor, DiffusionActor):
            many = obs.repeat(k, *([1] * (obs.dim() - 1)))
            return self.actor.predict(many, deterministic=False).view(k, *obs.shape[:-1], -1)
        return self.actor(obs).sample((k,))

    @property
    def risk_kind(self) -> str:
        """What the run's risk signal estimates: ``discounted_cost`` (F) or ``first_cost_decay`` (FPI's G)."""
        return 'first_cost_decay' if self.feasibility_critic is not None else 'discounted_cost'

    @property
    def risk_threshold(self) -> float:
        """The level at or below which the run calls a state feasible: ``d``, FPI's ``p_f``, or
        ALGD's cost target ``h``."""
        if self.feasibility_critic is not None:
            return float(self.cfgs['fpi_cfgs']['p_f'])
        if self.cost_ensemble is not None:
            from omnisafe_alam.core.algd import cost_target

            return cost_target(self.cfgs)
        return float(self.cfgs.get('alam_cfgs', {}).get('d', 0.1))

    def risk(self, obs: torch.Tensor, k: int = 64) -> torch.Tensor:
        """The run's risk estimate at each state: ``F_hat`` (cost critics) or, for SAC-FPI, the
        mean over ``k`` policy samples of ``max_i G_i(x, a)``, for ALGD of its pessimistic cost
        value ``mean + k_std std`` over the ensemble (``obs`` already normalised)."""
        if self.cost_ensemble is not None:
            from omnisafe_alam.core.diffusion import ensemble_risk

            with torch.no_grad():
                many = obs.repeat(k, *([1] * (obs.dim() - 1)))
                q_c = torch.stack(self.cost_ensemble(many, self.actor.predict(many, deterministic=False)))
                risk = ensemble_risk(q_c, float(self.cfgs['algd_cfgs']['ensemble_std']))
                return risk.view(k, *obs.shape[:-1]).mean(dim=0)
        if self.feasibility_critic is None:
            return self.f_hat(obs, k=k)
        with torch.no_grad():
            actions = self.sample_actions(obs, k)
            g = self.feasibility_critic(obs.expand(k, *obs.shape), actions)
            return torch.stack(g).max(dim=0).values.mean(dim=0)


def load_policy(
    cfgs: dict[str, Any],
    params: dict[str, Any],
    obs_space: Any,
    act_space: Any,
) -> tuple[torch.nn.Module, torch.nn.Module | None]:
    """The actor (any OmniSafe actor type) and observation normaliser of a checkpoint, eval mode."""
    from omnisafe.common.normalizer import Normalizer
    from omnisafe.models.actor.actor_builder import ActorBuilder

    model = cfgs['model_cfgs']
    actor = ActorBuilder(
        obs_space,
        act_space,
        model['actor']['hidden_sizes'],
        model['actor']['activation'],
        model['weight_initialization_mode'],
    ).build_actor(model['actor_type'])
    actor.load_state_dict(params['pi'])
    actor.eval()
    obs_normalizer = None
    if 'obs_normalizer' in params:
        obs_normalizer = Normalizer(shape=obs_space.shape, clip=5)
        obs_normalizer.load_state_dict(params['obs_normalizer'])
        obs_normalizer.eval()
    return actor, obs_normalizer


def load_run(run_dir: str | Path, checkpoint: str | None = None) -> LoadedRun:
    """Rebuild actor, multiplier and cost critics of a run from its config and a checkpoint."""
    from gymnasium import spaces
    from omnisafe_alam.core.models import MultiplierNet, build_cost_critic

    run_dir = Path(run_dir)
    config_path = run_dir / 'config.json'
    if not config_path.exists():
        raise RunError(f'{run_dir} is not a run directory: it has no config.json')
    cfgs = json.loads(config_path.read_text(encoding='utf-8'))
    path = final_checkpoint(run_dir, checkpoint)
    params = torch.load(path, map_location='cpu', weights_only=True)

    model = cfgs['model_cfgs']
    if model['actor_type'] == 'diffusion':
        # the score network reads (obs, act, step embedding); its head gives act_dim
        act_dim = int(params['pi']['score_head.bias'].shape[0])
        embed = int(params['pi']['time_embedding.weight'].shape[1])
        obs_dim = int(params['pi']['body.0.weight'].shape[1]) - act_dim - embed
    elif model['actor_type'] == 'gaussian_sac':
        # sizes from the actor's first weight (hidden, obs_dim) and last bias (2 * act_dim)
        layers = [v for k, v in params['pi'].items() if k.startswith('net.')]
        obs_dim, act_dim = int(layers[0].shape[1]), int(layers[-1].shape[0]) // 2
    else:
        raise RunError(f"run {run_dir} has actor_type {model['actor_type']!r}; gaussian_sac and diffusion load")
    obs_space = spaces.Box(-np.inf, np.inf, (obs_dim,))
    act_space = spaces.Box(-1.0, 1.0, (act_dim,))
    actor, obs_normalizer = load_policy(cfgs, params, obs_space, act_space)

    multiplier = None
    if 'multiplier' in params:
        alam = cfgs['alam_cfgs']
        multiplier = MultiplierNet(
            obs_dim,
            alam['multiplier_hidden_sizes'],
            alam['multiplier_activation'],
            alam['multiplier_output'],
            alam.get('multiplier_max', float('inf')),
        )
        multiplier.load_state_dict(params['multiplier'])

    def twin(key: str, output: str) -> torch.nn.Module | None:
        if key not in params:
            return None
        # the state-wise family's cost critics may be wider than the reward critics
        widths = cfgs.get('alam_cfgs', {}).get('cost_critic_hidden_sizes') if key == 'cost_critic' else None
        net = build_cost_critic(
            obs_space,
            act_space,
            list(widths) if widths else model['critic']['hidden_sizes'],
            model['critic']['activation'],
            model['weight_initialization_mode'],
            output,
        )
        net.load_state_dict(params[key])
        return net

    # runs saved before the key existed had a linear head; SAC-FPI's CDF critics are linear
    cost_critic = twin('cost_critic', cfgs.get('alam_cfgs', {}).get('cost_critic_output', 'linear'))
    feasibility_critic = twin('feasibility_critic', 'linear')
    cost_ensemble = None
    if 'cost_ensemble' in params:
        from omnisafe.models.critic.critic_builder import CriticBuilder

        cost_ensemble = CriticBuilder(
            obs_space,
            act_space,
            model['critic']['hidden_sizes'],
            model['critic']['activation'],
            model['weight_initialization_mode'],
            num_critics=int(cfgs['algd_cfgs']['ensemble_size']),
            use_obs_encoder=False,
        ).build_critic('q')
        cost_ensemble.load_state_dict(params['cost_ensemble'])

    for net in (multiplier, cost_critic, feasibility_critic, cost_ensemble):
        if net is not None:
            net.eval()
    return LoadedRun(run_dir, cfgs, path, actor, multiplier, cost_critic, obs_normalizer, feasibility_critic, cost_ensemble)


def total_variation(values: np.ndarray) -> float:
    r"""Total variation :math:`\sum_t |v_{t+1} - v_t|` of a sequence (0 for fewer than 2 values)."""
    values = np.asarray(values, dtype=float)
    return float(np.abs(np.diff(values)).sum()) if values.size > 1 else 0.0


def stability_metrics(progress: pd.DataFrame) -> dict[str, float]:
    """Oscillation figures over the second half of a run's epochs (``progress.csv`` rows).

    - ``multiplier_tv``: total variation of the epoch's batch-mean multiplier
      (``Metrics/MultiplierMean``, or ASAC/SACLag's ``Metrics/LagrangeMultiplier``);
    - ``multiplier_tv_rel``: the same divided by the mean multiplier over that half;
    - ``ep_cost_std``: standard deviation of ``Metrics/EpCost`` over that half;
    - ``ep_cost_tv``: total variation of ``Metrics/EpCost`` over that half.
    """
    half = progress.iloc[len(progress) // 2 :]
    key = 'Metrics/MultiplierMean' if 'Metrics/MultiplierMean' in half else 'Metrics/LagrangeMultiplier'
    out = {'ep_cost_std': float(half['Metrics/EpCost'].std(ddof=0)),
           'ep_cost_tv': total_variation(half['Metrics/EpCost'].to_numpy())}
    if key in half:
        lam = half[key].to_numpy(dtype=float)
        out['multiplier_tv'] = total_variation(lam)
        mean = float(np.mean(lam))
        out['multiplier_tv_rel'] = out['multiplier_tv'] / mean if mean > 0 else float('nan')
    return out


def settled_at(progress: pd.DataFrame, limit: float) -> float:
    """The first ``TotalEnvSteps`` from which the epoch's ``Metrics/EpCost`` stays ``<= limit`` to
    the end of the run (NaN when the last epoch is above it): when the cost came down for good."""
    cost = progress['Metrics/EpCost'].to_numpy(dtype=float)
    steps = progress['TotalEnvSteps'].to_numpy(dtype=float)
    above = np.flatnonzero(~(cost <= limit))  # NaN counts as above
    if len(above) == 0:
        return float(steps[0])
    first = above[-1] + 1
    return float(steps[first]) if first < len(cost) else float('nan')


def markdown_table(frame: pd.DataFrame, digits: int = 3) -> str:
    """A GitHub-flavoured markdown table (no extra dependency)."""

    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return 'n/a' if np.isnan(value) else f'{value:.{digits}g}' if abs(value) < 1e-3 else f'{value:.{digits}f}'
        return str(value)

    header = '| ' + ' | '.join(map(str, frame.columns)) + ' |'
    rule = '|' + '|'.join('---' for _ in frame.columns) + '|'
    rows = ['| ' + ' | '.join(fmt(v) for v in row) + ' |' for row in frame.itertuples(index=False)]
    return '\n'.join([header, rule, *rows])
