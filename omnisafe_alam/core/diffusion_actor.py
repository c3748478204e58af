"""A VE-SDE diffusion policy as an OmniSafe ``Actor`` (ALGD's, issue 25).

The reference (github.com/Wenxuan52/ALGD, ``agents/algd/VESDE.py``, ``DiffusionPolicy``) keeps a
latent ``x`` whose ``tanh`` is the action; its score network reads the state, the *action*
``tanh(x)`` and an embedding of the step, and each reverse step moves the latent
(:func:`omnisafe_alam.core.diffusion.ve_reverse_step`). Sampling starts from
``x ~ N(0, sigma_max^2)``; the deterministic action starts from ``x = 0`` and adds no noise.

A diffusion policy has no closed-form density, so :meth:`log_prob` and :meth:`forward` (which
OmniSafe's Gaussian actors answer with a ``Distribution``) raise, naming what to use instead.
Actions are in ``[-1, 1]``: OmniSafe's adapters scale them to the environment's bounds.
"""

from __future__ import annotations

import torch
from omnisafe.models.base import Actor
from omnisafe.typing import Activation, InitFunction, OmnisafeSpace
from omnisafe.utils.model import build_mlp_network
from torch import nn
from torch.distributions import Distribution

from omnisafe_alam.core import diffusion as D


class DiffusionActor(Actor):
    """The reference's VE-SDE policy: ``steps`` reverse steps from ``sigma_max`` down to ``sigma_min``.

    Args:
        obs_space, act_space, hidden_sizes, activation, weight_initialization_mode: as OmniSafe's
            actors (the reference: 3 x 128, ReLU).
        steps: ``K``, the reverse steps (reference: 5).
        sigma_min, sigma_max: the VE schedule's ends (reference: 0.01, 1.0).
        time_embed_dim: width of the step embedding (reference: 16).
    """

    def __init__(
        self,
        obs_space: OmnisafeSpace,
        act_space: OmnisafeSpace,
        hidden_sizes: list[int],
        activation: Activation = 'relu',
        weight_initialization_mode: InitFunction = 'kaiming_uniform',
        steps: int = 5,
        sigma_min: float = 0.01,
        sigma_max: float = 1.0,
        time_embed_dim: int = 16,
    ) -> None:
        super().__init__(obs_space, act_space, hidden_sizes, activation, weight_initialization_mode)
        sigmas, delta = D.ve_schedule(steps, sigma_min, sigma_max)
        self.steps = steps
        self.register_buffer('sigmas', sigmas)
        self.register_buffer('delta_sigma2', delta)
        self.time_embedding = nn.Embedding(steps, time_embed_dim)
        self.body = build_mlp_network(
            [self._obs_dim + self._act_dim + time_embed_dim, *hidden_sizes],
            activation=activation,
            output_activation=activation,
            weight_initialization_mode=weight_initialization_mode,
        )
        self.score_head = nn.Linear(hidden_sizes[-1], self._act_dim)

    def score(self, obs: torch.Tensor, act: torch.Tensor, step: torch.Tensor) -> torch.Tensor:
        """``phi_theta(s, a, k)``, ``(B, A)``; ``step`` is ``(B,)`` of step indices in ``[0, K)``."""
        return self.score_head(self.body(torch.cat([obs, act, self.time_embedding(step)], dim=-1)))

    def sample(
        self,
        obs: torch.Tensor,
        deterministic: bool = False,
        record_step: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Run the reverse chain (with gradient, so a loss on the action reaches every step).

        Returns ``(a_0, a_tau, tau)``: the action and, with ``record_step``, the action ``tanh(x)``
        right after a uniformly drawn step ``tau`` of each state's chain (``sample_with_traj``,
        what ALGD's score loss is taken at); else ``None, None``.
        """
        batch = obs.shape[0]
        if deterministic:
            x = obs.new_zeros(batch, self._act_dim)
        else:
            x = torch.randn(batch, self._act_dim, device=obs.device, dtype=obs.dtype) * self.sigmas[-1]
        tau = torch.randint(0, self.steps, (batch,), device=obs.device) if record_step else None
        a_tau = obs.new_zeros(batch, self._act_dim) if record_step else None
        for k in reversed(range(self.steps)):
            step = torch.full((batch,), k, dtype=torch.long, device=obs.device)
            phi = self.score(obs, torch.tanh(x), step)
            noise = None if deterministic or k == 0 else torch.randn_like(x)
            x = D.ve_reverse_step(x, phi, self.delta_sigma2[k], noise)
            if record_step:
                a_tau = torch.where((tau == k).unsqueeze(-1), torch.tanh(x), a_tau)
        return torch.tanh(x), a_tau, tau

    def predict(self, obs: torch.Tensor, deterministic: bool = False) -> torch.Tensor:
        """An action in ``[-1, 1]`` for rollouts and ``omnisafe eval`` (one observation or a batch)."""
        single = obs.dim() == 1
        act, _, _ = self.sample(obs.unsqueeze(0) if single else obs, deterministic)
        return act[0] if single else act

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: object, **kwargs: object) -> None:
        """A checkpoint carries its own schedule: an actor built with the defaults (as
        ``omnisafe eval`` builds every actor, from ``hidden_sizes`` alone) takes the saved number
        of steps before the values are copied."""
        saved = state_dict.get(prefix + 'sigmas')
        if saved is not None and saved.shape != self.sigmas.shape:
            self.steps = int(saved.shape[0])
            self.sigmas = torch.empty_like(saved)
            self.delta_sigma2 = torch.empty_like(saved)
            self.time_embedding = nn.Embedding(self.steps, self.time_embedding.embedding_dim)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)  # type: ignore[arg-type]

    def _distribution(self, obs: torch.Tensor) -> Distribution:
        raise NotImplementedError('a diffusion policy has no closed-form distribution: use predict() or sample()')

    def forward(self, obs: torch.Tensor) -> Distribution:
        raise NotImplementedError('a diffusion policy has no closed-form distribution: use predict() or sample()')

    def log_prob(self, act: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError('a diffusion policy has no closed-form log-density (ALGD has no entropy term)')
