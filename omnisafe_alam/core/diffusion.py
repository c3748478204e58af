"""The math of ALGD, as pure functions (issue 25; not yet an algorithm of the plugin).

ALGD: "How Does the Lagrangian Guide Safe Reinforcement Learning through Diffusion Models?"
(arXiv 2602.02924). Its policy is a variance-exploding (VE) SDE diffusion model over a
pre-tanh latent, whose reverse steps follow a learned score; the score is trained toward the
Monte Carlo score of ``exp(-L_A / beta)``, with ``L_A`` the augmented Lagrangian of the reward
critic and a pessimistic cost-critic ensemble. Each function names the lines of the reference
implementation (github.com/Wenxuan52/ALGD, ``agents/algd/VESDE.py`` and ``ALGD_VESDE.py``) it
reproduces. Shapes: ``B`` the batch, ``A`` the action dimension, ``N`` Monte Carlo samples,
``E`` ensemble members, ``K`` diffusion steps.
"""

from __future__ import annotations

import torch

from typing import Callable

from omnisafe_alam.core import functional as F

__all__ = [
    'algd_cost_target',
    'augmented_energy',
    'ensemble_cost_target',
    'ensemble_risk',
    'multiplier_loss',
    'mc_score_around',
    'mc_score_target',
    've_reverse_step',
    've_schedule',
]


def ve_schedule(k: int, sigma_min: float = 0.01, sigma_max: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The VE noise levels and their increments (``DiffusionPolicy.__init__``).

    .. math::

        \sigma_k = \sigma_{\min} (\sigma_{\max} / \sigma_{\min})^{k / (K - 1)}, \quad
        \Delta\sigma^2_k = \sigma_k^2 - \sigma_{k-1}^2, \quad \sigma_{-1}^2 = 0,
        \qquad k = 0, \dots, K - 1

    The reference's defaults: ``K = 5``, 0.01 to 1.0 (the issue writes it ``0.01 * 100^linspace(0, 1, 5)``).

    Returns:
        ``(sigmas, delta_sigma2)``, each of shape ``(K,)``.
    """
    if k < 2:
        raise ValueError(f'a VE schedule needs at least 2 steps, got {k}')
    if not 0.0 < sigma_min < sigma_max:
        raise ValueError(f'need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}')
    sigmas = sigma_min * (sigma_max / sigma_min) ** torch.linspace(0.0, 1.0, k)
    sigma2 = sigmas**2
    delta = sigma2 - torch.cat([sigma2.new_zeros(1), sigma2[:-1]])
    return sigmas, delta


def ve_reverse_step(
    x: torch.Tensor,
    score: torch.Tensor,
    delta_sigma2: float | torch.Tensor,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""One reverse VE-SDE step in the latent (``DiffusionPolicy.p_sample``).

    .. math::

        x_{k-1} = x_k + \Delta\sigma^2_k\, \phi_\theta(s, \tanh x_k, k) + \sqrt{\Delta\sigma^2_k}\; \varepsilon

    with no noise at the last step (``k = 0``) and in the deterministic evaluation, which starts
    from ``x = 0`` (``sample_deterministic``). The reference clamps the increment at 1e-8.

    Args:
        x: latents, ``(B, A)``.
        score: :math:`\phi_\theta` at them, ``(B, A)``.
        delta_sigma2: :math:`\Delta\sigma^2_k`, a number or broadcastable to ``(B, A)``.
        noise: :math:`\varepsilon \sim N(0, I)`, ``(B, A)``; None: no noise.
    """
    delta = torch.as_tensor(delta_sigma2, dtype=x.dtype).clamp(min=1e-8)
    mean = x + delta * score
    return mean if noise is None else mean + delta.sqrt() * noise


def ensemble_risk(q_c: torch.Tensor, k_std: float = 1.0) -> torch.Tensor:
    r"""The cost ensemble's pessimistic value: :math:`\bar Q^c = \mathrm{mean} + k\,\mathrm{std}`
    over the members (``compute_LA``; the reference's ``k = 1``, ``torch.std_mean``'s unbiased
    std, and std 0 for an ensemble of one).

    Args:
        q_c: ``(E, B)`` or ``(E, B, 1)``.
    """
    if q_c.shape[0] == 1:
        return q_c[0]
    std, mean = torch.std_mean(q_c, dim=0)
    return mean + k_std * std


def augmented_energy(
    q1: torch.Tensor,
    q2: torch.Tensor,
    q_c_risk: torch.Tensor,
    lam: float | torch.Tensor,
    rho: float,
    h: float,
) -> torch.Tensor:
    r"""ALGD's energy, the augmented Lagrangian at an action (``compute_LA``).

    .. math::

        L_A(s, a) = -\min(Q_1, Q_2) + \frac{1}{2\rho}\Big([\lambda + \rho(\bar Q^c - h)]_+^2 - \lambda^2\Big)

    Its gradient in ``a`` is :math:`-\nabla_a \min Q + [\lambda + \rho(\bar Q^c - h)]_+ \nabla_a \bar Q^c`.
    The penalty is SAC-ALaM's Eq. 16 term with ``g = Q_c_bar - h`` and no slope cap
    (:func:`omnisafe_alam.core.functional.augmented_penalty`, ``lambda m + rho m^2 / 2`` with
    ``m = max(-lambda / rho, g)``, the same function): the two papers share the augmented penalty
    and differ in what ``g`` is and how the policy follows it.
    """
    if rho <= 0:
        raise ValueError(f'rho must be > 0, got {rho}')
    lam = torch.as_tensor(lam, dtype=q1.dtype)
    return -torch.min(q1, q2) + F.augmented_penalty(lam, q_c_risk - h, rho)


def mc_score_target(energy: torch.Tensor, grad_a: torch.Tensor, beta: float) -> torch.Tensor:
    r"""Monte Carlo score of :math:`p(a) \propto \exp(-L_A(a) / \beta)` around a noisy action
    (``compute_score_target_mc``), from ``N`` samples :math:`a^{(i)} = a^\tau + \sigma_\tau \varepsilon_i`:

    .. math::

        \phi^* = -\frac{1}{\beta} \sum_{i=1}^{N} w_i \nabla_a L_A(a^{(i)}), \qquad
        w = \mathrm{softmax}_i(-L_A(a^{(i)}) / \beta)

    Args:
        energy: :math:`L_A` at the samples, ``(B, N)``.
        grad_a: :math:`\nabla_a L_A` at them, ``(B, N, A)``.
        beta: the temperature :math:`\beta > 0` (reference: 1).

    Returns:
        :math:`\phi^*`, ``(B, A)``, without gradient.
    """
    if beta <= 0:
        raise ValueError(f'beta must be > 0, got {beta}')
    if energy.dim() != 2 or grad_a.shape[:2] != energy.shape:
        raise ValueError(f'energy (B, N) and grad_a (B, N, A) disagree: {tuple(energy.shape)}, {tuple(grad_a.shape)}')
    with torch.no_grad():
        weights = torch.softmax(-energy / beta, dim=1).unsqueeze(-1)
        return -(weights * grad_a).sum(dim=1) / beta


def algd_cost_target(cost_limit: float, gamma: float, episode_length: int) -> float:
    r"""The per-state cost target ``h`` from an episode cost limit (``ALGDAgent.__init__``, Safety-Gym):

    .. math::

        h = \frac{C\,(1 - \gamma^{T})}{(1 - \gamma)\, T}

    the discounted value of spreading the limit ``C`` evenly over an episode of ``T`` steps
    (``C`` itself when ``gamma = 1``).
    """
    if episode_length < 1:
        raise ValueError(f'episode_length must be >= 1, got {episode_length}')
    if gamma >= 1.0:
        return float(cost_limit)
    return cost_limit * (1.0 - gamma**episode_length) / (1.0 - gamma) / episode_length


def ensemble_cost_target(
    cost: torch.Tensor,
    done: torch.Tensor,
    q_c_next: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    r"""Each cost critic's own Bellman target (``update_critic``: no max or mean over members):

    .. math::

        y_e = c + \gamma\,(1 - \mathrm{done})\, \bar Q^c_e(s', a'), \qquad a' \sim \pi(\cdot \mid s')

    Args:
        cost, done: ``(B,)``.
        q_c_next: the target members at ``(s', a')``, ``(E, B)``.

    Returns:
        ``(E, B)``, without gradient. (The reference sets ``done`` to 0 on Safety-Gym, whose
        episodes only end by time limit; OmniSafe's ``done`` is 0 there too.)
    """
    with torch.no_grad():
        return cost.unsqueeze(0) + gamma * (1.0 - done).unsqueeze(0) * q_c_next


def multiplier_loss(lam: torch.Tensor, h: float, q_c_risk: torch.Tensor) -> torch.Tensor:
    r"""ALGD's dual loss (``update_actor``): :math:`\lambda\,\mathbb E_B[h - \bar Q^c(s, a_{\mathcal B})]`
    at the replay batch's own actions, the bracket detached.

    Its gradient in :math:`\log\lambda` is :math:`\lambda\,\mathbb E[h - \bar Q^c]`: descent raises
    :math:`\lambda` while the pessimistic cost value is above the target ``h`` (dual ascent on
    the constraint :math:`\bar Q^c \le h`), and lowers it below.
    """
    return lam * (h - q_c_risk.detach()).mean()


def mc_score_around(
    energy_fn: Callable[[torch.Tensor], torch.Tensor],
    a_tau: torch.Tensor,
    sigma_tau: torch.Tensor,
    samples: int,
    beta: float,
) -> torch.Tensor:
    r"""The Monte Carlo score target at ``a_tau`` (``compute_score_target_mc``): ``N`` actions
    :math:`a^{(i)} = a^\tau + \sigma_\tau \varepsilon_i` (in action space, unclipped, as the
    reference), the energy and its action gradient at each, then :func:`mc_score_target`.

    Args:
        energy_fn: the energy at ``(B * N, A)`` actions, state-major (the ``N`` samples of state
            ``b`` are rows ``b N`` to ``b N + N - 1``), ``(B * N,)``.
        a_tau: ``(B, A)``, detached here.
        sigma_tau: the noise level of each state's step, ``(B,)``.

    Returns:
        ``(B, A)``, without gradient.
    """
    batch, act_dim = a_tau.shape
    noise = torch.randn(batch, samples, act_dim, device=a_tau.device, dtype=a_tau.dtype)
    flat = (a_tau.detach().unsqueeze(1) + sigma_tau.view(batch, 1, 1) * noise).reshape(batch * samples, act_dim)
    # a non-leaf (x 1.0): torch's FLOP counter cannot follow autograd.grad to a leaf input
    flat = flat.requires_grad_(True) * 1.0
    energy = energy_fn(flat)
    (grad,) = torch.autograd.grad(energy.sum(), flat)
    return mc_score_target(energy.detach().view(batch, samples), grad.view(batch, samples, act_dim), beta)
