"""Networks of the state-wise family: twin cost critics, the multiplier network, the dual state."""

from __future__ import annotations

import math
from copy import deepcopy
from typing import Any

import torch
from omnisafe.models.actor_critic.actor_q_critic import ActorQCritic
from omnisafe.models.critic.critic_builder import CriticBuilder
from omnisafe.typing import OmnisafeSpace
from omnisafe.utils.config import ModelConfig
from omnisafe.utils.model import build_mlp_network
from torch import nn, optim

__all__ = [
    'ALGDActorCritic',
    'DualState',
    'FeasibilityActorQCritic',
    'MultiplierNet',
    'NonNegativeCritic',
    'PolyakPairs',
    'ScalarMultiplier',
    'StatewiseActorQCritic',
    'add_layer_norm',
    'build_cost_critic',
    'frozen_copy',
    'polyak_step',
    'use_diffusion_actor',
]


class MultiplierNet(nn.Module):
    r"""State-wise multiplier :math:`\lambda_w(x) \ge 0` (Sec. II-C, Table I: MLP 2x256 ReLU).

    The non-negative head is ``softplus`` (FAC's choice: smooth, gradients everywhere) or
    ``relu``; the output is then capped at ``max_value`` (``alam_cfgs.multiplier_max``). The
    losses train :meth:`uncapped`, whose gradient the cap would otherwise cut.

    Args:
        obs_dim: observation size.
        hidden_sizes: hidden layer widths.
        activation: hidden activation, one of OmniSafe's activation names.
        output: ``'softplus'`` or ``'relu'``.
        max_value: the cap (``inf``: none).
        init_value: if given, the output starts at about this value at every state: the last
            layer's weights are scaled by 1e-3 and its bias set to the head's inverse at
            ``init_value`` (softplus: ``log(expm1(v))``, ``v`` at least 1e-4).
    """

    def __init__(
        self,
        obs_dim: int,
        hidden_sizes: list[int],
        activation: str = 'relu',
        output: str = 'softplus',
        max_value: float = math.inf,
        init_value: float | None = None,
    ) -> None:
        super().__init__()
        self.max_value = max_value
        self.net = build_mlp_network(
            sizes=[obs_dim, *hidden_sizes, 1],
            activation=activation,  # type: ignore[arg-type]
            weight_initialization_mode='kaiming_uniform',
        )
        self._head = nn.Softplus() if output == 'softplus' else nn.ReLU()
        if init_value is not None:
            last = [m for m in self.net if isinstance(m, nn.Linear)][-1]
            with torch.no_grad():
                last.weight.mul_(1e-3)
                if output == 'softplus':
                    last.bias.fill_(math.log(math.expm1(max(init_value, 1e-4))))
                else:
                    last.bias.fill_(init_value)

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """Multiplier at each state: ``(..., obs_dim) -> (...)``."""
        return torch.clamp(self.uncapped(obs), max=self.max_value)

    def uncapped(self, obs: torch.Tensor) -> torch.Tensor:
        """The head's output before the cap, which the multiplier losses train (the capped one
        has no gradient above the cap, so a multiplier that got there could never come down)."""
        return self._head(self.net(obs)).squeeze(-1)


class DualState(nn.Module):
    """The scalars of the dual side, kept as buffers so checkpoints carry them.

    ``rho`` is the penalty factor (Sec. III-D); ``lam`` is ASAC's scalar multiplier (unused by
    the state-wise variants).
    """

    rho: torch.Tensor
    lam: torch.Tensor

    def __init__(self, rho_init: float, lambda_init: float) -> None:
        super().__init__()
        self.register_buffer('rho', torch.tensor(float(rho_init)))
        self.register_buffer('lam', torch.tensor(float(lambda_init)))


def polyak_step(source: nn.Module, target: nn.Module, tau: float) -> None:
    """``target <- tau * source + (1 - tau) * target``, parameter by parameter (OmniSafe's formula)."""
    for param, target_param in zip(source.parameters(), target.parameters()):
        target_param.data.copy_(tau * param.data + (1 - tau) * target_param.data)


class PolyakPairs:
    """:func:`polyak_step` over several (source, target) pairs in three ``foreach`` calls.

    The parameter lists are collected once (walking modules costs more than averaging small
    networks). Bit for bit the numbers of :func:`polyak_step`: the same float32 products
    ``tau * s`` and ``(1 - tau) * t``, added (``a + b == b + a`` exactly).
    """

    def __init__(self, *pairs: tuple[nn.Module, nn.Module]) -> None:
        self.sources = [p for source, _ in pairs for p in source.parameters()]
        self.targets = [p for _, target in pairs for p in target.parameters()]
        if [p.shape for p in self.sources] != [p.shape for p in self.targets]:
            raise ValueError('Polyak pairs must have the same parameter shapes')

    @torch.no_grad()
    def step(self, tau: float) -> None:
        scaled = torch._foreach_mul(self.sources, tau)
        torch._foreach_mul_(self.targets, 1 - tau)
        torch._foreach_add_(self.targets, scaled)


class NonNegativeCritic(nn.Module):
    r"""Twin cost critics whose outputs pass through a ``softplus`` head: :math:`Q^c \ge 0`.

    Costs are non-negative, so is every discounted cost value. A linear head must produce an
    exact zero over the whole safe region out of ReLU features, and its errors of either sign
    then sit at the scale of ``d``: on StatewiseBraking-v0, with the policy and the replay data
    held fixed, F_hat stayed 0.4-0.5 above the Monte-Carlo value on feasible states with a
    linear head and reached it (within 0.03) with this one (docs/algorithms.md). The wrapped
    OmniSafe critic keeps its interface: ``forward(obs, act)`` returns one tensor per critic.
    """

    def __init__(self, critic: nn.Module) -> None:
        super().__init__()
        self.critic = critic

    def forward(self, obs: torch.Tensor, act: torch.Tensor) -> list[torch.Tensor]:
        return [nn.functional.softplus(q) for q in self.critic(obs, act)]

    def pre_activations(self, obs: torch.Tensor, act: torch.Tensor) -> list[torch.Tensor]:
        """The twins' outputs before the softplus head (what ``alam_cfgs.cost_critic_floor``
        keeps above its logit, :func:`omnisafe_alam.core.functional.logit_floor_penalty`)."""
        return self.critic(obs, act)


def build_cost_critic(
    obs_space: OmnisafeSpace,
    act_space: OmnisafeSpace,
    hidden_sizes: list[int],
    activation: str,
    weight_initialization_mode: str,
    output: str,
) -> nn.Module:
    """Twin cost critics (OmniSafe's ``QCritic``) with the ``output`` head: ``linear`` or ``softplus``."""
    critic = CriticBuilder(
        obs_space=obs_space,
        act_space=act_space,
        hidden_sizes=hidden_sizes,
        activation=activation,
        weight_initialization_mode=weight_initialization_mode,
        num_critics=2,
        use_obs_encoder=False,
    ).build_critic('q')
    if output == 'linear':
        return critic
    if output == 'softplus':
        return NonNegativeCritic(critic)
    raise ValueError(f"cost critic output must be 'linear' or 'softplus', got {output!r}")


def add_layer_norm(critic: nn.Module) -> None:
    """Insert a LayerNorm after every hidden linear layer of an OmniSafe ``QCritic``, in place.

    ``alam_cfgs.reward_critic_layer_norm``. The linear layers (and their initial weights) are
    kept; the output layer gets none. A normalised last hidden layer has norm at most
    ``sqrt(width)`` (times its gains), so the critic's output is bounded by its output layer's
    weights wherever its input lies: a reward critic cannot extrapolate without bound into states
    and actions its replay data barely covers (Ball et al., 2023, "Efficient Online Reinforcement
    Learning with Offline Data", Sec. 3.2).
    """
    for net in critic.net_lst:  # type: ignore[attr-defined]
        layers = list(net[0])
        last = max(i for i, layer in enumerate(layers) if isinstance(layer, nn.Linear))
        new: list[nn.Module] = []
        for i, layer in enumerate(layers):
            new.append(layer)
            if isinstance(layer, nn.Linear) and i < last:
                new.append(nn.LayerNorm(layer.out_features))
        net[0] = nn.Sequential(*new)


def use_diffusion_actor(
    actor_critic: ActorQCritic,
    obs_space: OmnisafeSpace,
    act_space: OmnisafeSpace,
    model_cfgs: ModelConfig,
    epochs: int,
) -> None:
    """Give an OmniSafe actor-critic a :class:`~omnisafe_alam.core.diffusion_actor.DiffusionActor`
    with ``model_cfgs.diffusion``'s schedule, its Adam and LR schedule, in place (the builder's
    actor has the reference's schedule; SAC never reads ``target_actor``, which is dropped)."""
    from omnisafe_alam.core.diffusion_actor import DiffusionActor

    diffusion = model_cfgs.diffusion
    actor_critic.actor = DiffusionActor(
        obs_space,
        act_space,
        model_cfgs.actor.hidden_sizes,
        model_cfgs.actor.activation,
        model_cfgs.weight_initialization_mode,
        steps=int(diffusion.steps),
        sigma_min=float(diffusion.sigma_min),
        sigma_max=float(diffusion.sigma_max),
        time_embed_dim=int(diffusion.time_embed_dim),
    )
    if hasattr(actor_critic, 'target_actor'):
        del actor_critic.target_actor
    actor_critic.actor_optimizer = optim.Adam(actor_critic.actor.parameters(), lr=model_cfgs.actor.lr)
    if model_cfgs.linear_lr_decay:
        actor_critic.actor_scheduler = optim.lr_scheduler.LinearLR(actor_critic.actor_optimizer, 1.0, 0.0, total_iters=epochs)
    else:
        actor_critic.actor_scheduler = optim.lr_scheduler.ConstantLR(actor_critic.actor_optimizer, 1.0, total_iters=epochs)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A Polyak target: a deep copy whose parameters take no gradient."""
    target = deepcopy(module)
    for param in target.parameters():
        param.requires_grad = False
    return target


def _twin_with_target(
    obs_space: OmnisafeSpace,
    act_space: OmnisafeSpace,
    model_cfgs: ModelConfig,
    output: str,
    hidden_sizes: list[int] | None = None,
) -> tuple[nn.Module, nn.Module, optim.Optimizer]:
    """Twin critics with the reward critics' architecture (or ``hidden_sizes``), a frozen
    Polyak target and Adam at the critic learning rate."""
    critic = build_cost_critic(
        obs_space,
        act_space,
        list(hidden_sizes) if hidden_sizes else model_cfgs.critic.hidden_sizes,
        model_cfgs.critic.activation,
        model_cfgs.weight_initialization_mode,
        output,
    )
    return critic, frozen_copy(critic), optim.Adam(critic.parameters(), lr=model_cfgs.critic.lr)


class StatewiseActorQCritic(ActorQCritic):
    """OmniSafe's actor and twin reward critics, plus *twin* cost critics and the multiplier.

    OmniSafe's :class:`ConstraintActorQCritic` has a single cost critic; the ALaM family needs
    two, combined pessimistically (max) in the target and in ``F_hat`` (Sec. V).

    Attributes (beyond :class:`ActorQCritic`):
        cost_critic, target_cost_critic: twin Q^c networks and their Polyak targets, with the
            ``cost_output`` head (``alam_cfgs.cost_critic_output``, see :func:`build_cost_critic`).
        cost_critic_optimizer: Adam at the critic learning rate.
        multiplier: :class:`MultiplierNet`, or ``None`` for scalar-multiplier variants (ASAC).

    With ``reward_layer_norm`` the reward critics (and their target) get :func:`add_layer_norm`;
    with ``model_cfgs.actor_type: diffusion`` the actor is :func:`use_diffusion_actor`'s;
    ``cost_hidden_sizes`` (``alam_cfgs.cost_critic_hidden_sizes``) widens the cost critics alone.
    """

    def __init__(
        self,
        obs_space: OmnisafeSpace,
        act_space: OmnisafeSpace,
        model_cfgs: ModelConfig,
        epochs: int,
        multiplier: MultiplierNet | None,
        cost_output: str = 'linear',
        reward_layer_norm: bool = False,
        cost_hidden_sizes: list[int] | None = None,
    ) -> None:
        super().__init__(obs_space, act_space, model_cfgs, epochs)
        if model_cfgs.actor_type == 'diffusion':
            use_diffusion_actor(self, obs_space, act_space, model_cfgs, epochs)
        if reward_layer_norm:
            add_layer_norm(self.reward_critic)
            self.target_reward_critic = frozen_copy(self.reward_critic)
            self.reward_critic_optimizer = optim.Adam(self.reward_critic.parameters(), lr=model_cfgs.critic.lr)
        self.cost_critic, self.target_cost_critic, self.cost_critic_optimizer = _twin_with_target(
            obs_space, act_space, model_cfgs, cost_output, cost_hidden_sizes,
        )
        self.multiplier = multiplier

    #: Polyak rate of the target cost critics; None: the rate OmniSafe passes for the others
    cost_tau: float | None = None

    def polyak_update(self, tau: float) -> None:
        """Polyak-average the twin reward critics (at ``tau``) and cost critics (at :attr:`cost_tau`).

        OmniSafe's version also averages ``target_actor``, which SAC never reads; it is skipped.
        """
        if not hasattr(self, '_polyak_pairs'):
            self._polyak_pairs = (
                PolyakPairs((self.reward_critic, self.target_reward_critic)),
                PolyakPairs((self.cost_critic, self.target_cost_critic)),
            )
        self._polyak_pairs[0].step(tau)
        self._polyak_pairs[1].step(tau if self.cost_tau is None else self.cost_tau)

    def checkpoint_items(self) -> dict[str, Any]:
        """Modules saved in each checkpoint besides the actor (state_dicts only)."""
        items: dict[str, Any] = {'cost_critic': self.cost_critic}
        if self.multiplier is not None:
            items['multiplier'] = self.multiplier
        return items


class FeasibilityActorQCritic(ActorQCritic):
    """OmniSafe's actor and twin reward critics, plus SAC-FPI's twin *CDF* critics ``G``.

    ``G(x, a)`` is a constraint decay function (the discounted probability-like weight of the
    first violation, in ``[0, 1]``), not a discounted cost value: it has its own target
    (:func:`omnisafe_alam.core.functional.fpi_cdf_target`), its own threshold ``fpi_cfgs.p_f`` and
    its own name in checkpoints (``feasibility_critic``), so a run of SAC-FPI is never read as
    if it had cost critics. Linear output head and the reward critics' architecture, as the
    reference implementation.

    Attributes (beyond :class:`ActorQCritic`):
        feasibility_critic, target_feasibility_critic: twin G networks and their Polyak targets.
        feasibility_critic_optimizer: Adam at the critic learning rate.
    """

    def __init__(
        self,
        obs_space: OmnisafeSpace,
        act_space: OmnisafeSpace,
        model_cfgs: ModelConfig,
        epochs: int,
    ) -> None:
        super().__init__(obs_space, act_space, model_cfgs, epochs)
        (
            self.feasibility_critic,
            self.target_feasibility_critic,
            self.feasibility_critic_optimizer,
        ) = _twin_with_target(obs_space, act_space, model_cfgs, 'linear')

    def polyak_update(self, tau: float) -> None:
        """Polyak-average the twin reward and CDF critics at ``tau`` (not the unused target actor)."""
        if not hasattr(self, '_polyak_pairs'):
            self._polyak_pairs = PolyakPairs(
                (self.reward_critic, self.target_reward_critic),
                (self.feasibility_critic, self.target_feasibility_critic),
            )
        self._polyak_pairs.step(tau)

    def checkpoint_items(self) -> dict[str, Any]:
        """Modules saved in each checkpoint besides the actor (state_dicts only)."""
        return {'feasibility_critic': self.feasibility_critic}


class ScalarMultiplier(nn.Module):
    r"""ALGD's one multiplier :math:`\lambda = e^{\log\lambda}` (``ALGDAgent.log_lam``), a module
    so that checkpoints and the full training state carry it."""

    def __init__(self, init_value: float) -> None:
        super().__init__()
        if init_value <= 0:
            raise ValueError(f'the multiplier is exp(log lambda): its initial value must be > 0, got {init_value}')
        self.log_lam = nn.Parameter(torch.tensor(math.log(init_value)))

    def forward(self) -> torch.Tensor:
        return self.log_lam.exp()


class ALGDActorCritic(ActorQCritic):
    """ALGD's networks: a :class:`~omnisafe_alam.core.diffusion_actor.DiffusionActor`, OmniSafe's
    twin reward critics, and an ensemble of ``ensemble_size`` cost critics (OmniSafe's ``QCritic``
    with that many members, linear heads as the reference's ``QcEnsemble``), each with a
    Polyak target; the cost ensemble's Adam runs at ``cost_lr``.

    ``model_cfgs.actor_type`` must be ``diffusion`` (OmniSafe's builder is extended by the
    plugin's registration); the schedule comes from ``model_cfgs.diffusion``.
    """

    def __init__(
        self,
        obs_space: OmnisafeSpace,
        act_space: OmnisafeSpace,
        model_cfgs: ModelConfig,
        epochs: int,
        ensemble_size: int,
        cost_lr: float,
    ) -> None:
        if model_cfgs.actor_type != 'diffusion':
            raise ValueError(f"ALGD's actor is a diffusion policy: model_cfgs.actor_type must be 'diffusion', got {model_cfgs.actor_type!r}")
        super().__init__(obs_space, act_space, model_cfgs, epochs)
        use_diffusion_actor(self, obs_space, act_space, model_cfgs, epochs)
        self.cost_critic = CriticBuilder(
            obs_space=obs_space,
            act_space=act_space,
            hidden_sizes=model_cfgs.critic.hidden_sizes,
            activation=model_cfgs.critic.activation,
            weight_initialization_mode=model_cfgs.weight_initialization_mode,
            num_critics=ensemble_size,
            use_obs_encoder=False,
        ).build_critic('q')
        self.target_cost_critic = frozen_copy(self.cost_critic)
        self.cost_critic_optimizer = optim.Adam(self.cost_critic.parameters(), lr=cost_lr)

    def polyak_update(self, tau: float) -> None:
        """Polyak-average the reward critics and the cost ensemble at ``tau`` (the reference's
        ``soft_update`` of both)."""
        if not hasattr(self, '_polyak_pairs'):
            self._polyak_pairs = PolyakPairs(
                (self.reward_critic, self.target_reward_critic),
                (self.cost_critic, self.target_cost_critic),
            )
        self._polyak_pairs.step(tau)
