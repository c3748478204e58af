"""The math of SAC-ALaM and its baselines, as pure functions.

Every function here is stateless and typed; shapes are given in the docstrings with ``B`` the
batch size, ``K`` the number of Monte Carlo actions and ``N`` the number of twin critics (2).
Equation numbers refer to Zhang et al., "Augmented Lagrangian Multiplier Network for State-wise
Safety in Reinforcement Learning" (arXiv 2605.00667). The algorithm classes only sample,
call these functions, step optimizers and log.

The functions accept tensors of any (broadcast-compatible) shape, so the same code serves the
state-wise variants (one multiplier per state, shape ``(B,)``) and ASAC (one scalar multiplier
for the aggregated constraint, shape ``()``).
"""

from __future__ import annotations

import math

import torch

__all__ = [
    'augmented_penalty',
    'clipped_residual',
    'cost_critic_target',
    'dual_target',
    'f_hat',
    'lagrangian_penalty',
    'multiplier_ascent_loss',
    'multiplier_regression_loss',
    'optimal_slack',
    'penalty_step',
    'scalar_dual_step',
    'violation_metric',
]


def f_hat(q_c: torch.Tensor) -> torch.Tensor:
    r"""Monte Carlo estimate of the feasibility function at each state (Sec. V).

    .. math::

        \hat F_\psi(x) = \frac{1}{K} \sum_{k=1}^{K} \max_{i \in \{1,2\}} Q^c_{\psi_i}(x, a_k),
        \qquad a_k \sim \pi_\theta(\cdot | x)

    The max over the twin cost critics is the pessimistic (risk-averse) counterpart of the
    clipped double-Q trick.

    Args:
        q_c: cost values of shape ``(N, K, B)``: critic ``i`` at action sample ``k`` for state ``b``.

    Returns:
        ``F_hat`` of shape ``(B,)``.
    """
    if q_c.dim() != 3:
        raise ValueError(f'q_c must have shape (N, K, B), got {tuple(q_c.shape)}')
    return q_c.max(dim=0).values.mean(dim=0)


def cost_critic_target(
    c_t: torch.Tensor,
    done_t: torch.Tensor,
    q_c_tp1: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    r"""Target of the twin cost critics (Sec. V, :math:`y_\psi`).

    .. math::

        y_\psi = c + \gamma (1 - \text{done}) \max_{i \in \{1,2\}} \bar Q^c_{\psi_i}(x', a'),
        \qquad a' \sim \pi_\theta(\cdot | x')

    There is no entropy term in the cost target (unlike the reward target).

    Args:
        c_t: step cost, shape ``(B,)``.
        done_t: termination flag (1.0 for a true terminal state), shape ``(B,)``.
        q_c_tp1: target cost critics at the next state and sampled next action, shape ``(N, B)``.
        gamma: discount factor of the feasibility function.

    Returns:
        The regression target, shape ``(B,)``.
    """
    if q_c_tp1.dim() != 2 or q_c_tp1.shape[1:] != c_t.shape:
        raise ValueError(
            f'q_c_tp1 must have shape (N, B) with B={tuple(c_t.shape)}, got {tuple(q_c_tp1.shape)}',
        )
    return c_t + gamma * (1.0 - done_t) * q_c_tp1.max(dim=0).values


def optimal_slack(lam: torch.Tensor, g: torch.Tensor, rho: float) -> torch.Tensor:
    r"""Closed-form optimal slack of the augmented Lagrangian (Sec. III-B).

    .. math::

        p^{k+1}(x) = \max\left\{ -\frac{\lambda^k(x)}{\rho^k} - g(x),\ 0 \right\}

    where :math:`g = \hat F - d` is the constraint residual.

    Args:
        lam: multiplier values, shape ``(B,)`` (or ``()``).
        g: constraint residual, same shape.
        rho: penalty factor, ``> 0``.
    """
    return torch.clamp(-lam / rho - g, min=0.0)


def clipped_residual(lam: torch.Tensor, g: torch.Tensor, rho: float) -> torch.Tensor:
    r"""The residual after eliminating the slack: :math:`m = g + p` (Sec. III-B).

    .. math::

        m(x) = \max\left\{ -\frac{\lambda(x)}{\rho},\ g(x) \right\}

    Args:
        lam: multiplier values, shape ``(B,)`` (or ``()``).
        g: constraint residual, same shape.
        rho: penalty factor, ``> 0``.
    """
    return torch.maximum(-lam / rho, g)


def augmented_penalty(lam: torch.Tensor, g: torch.Tensor, rho: float) -> torch.Tensor:
    r"""Constraint terms of the augmented-Lagrangian policy loss (Eq. 16), per state.

    .. math::

        \lambda(x)\, m(x) + \frac{\rho}{2}\, m(x)^2,
        \qquad m(x) = \max\left\{ -\frac{\lambda(x)}{\rho},\ g(x) \right\}

    The caller passes ``lam`` detached (the multiplier is fixed during the primal step) and ``g``
    with gradient to the policy. Where the constraint is inactive (``g < -lam/rho``) the value is
    the constant ``-lam^2 / (2 rho)`` and no gradient reaches the policy.

    Args:
        lam: multiplier values (no gradient), shape ``(B,)`` (or ``()`` for ASAC).
        g: constraint residual, same shape.
        rho: penalty factor, ``> 0``.

    Returns:
        Per-state penalty, same shape as ``g``.
    """
    m = clipped_residual(lam, g, rho)
    return lam * m + 0.5 * rho * m.pow(2)


def lagrangian_penalty(lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r"""Constraint term of the standard state-wise Lagrangian (Eq. 3, SAC-LagNet / FAC), per state.

    .. math::

        \lambda(x)\, g(x)

    Args:
        lam: multiplier values (no gradient), shape ``(B,)``.
        g: constraint residual, same shape.
    """
    return lam * g


def dual_target(lam_k: torch.Tensor, g: torch.Tensor, rho: float) -> torch.Tensor:
    r"""Dual target of the multiplier update (Sec. III-C).

    .. math::

        \lambda^{k+1}_{\text{target}}(x) = \max\left\{ \lambda^k(x) + \rho^k g(x),\ 0 \right\}

    Args:
        lam_k: multiplier at the start of the cycle (frozen copy), shape ``(B,)``.
        g: constraint residual under the current policy, shape ``(B,)``.
        rho: penalty factor, ``> 0``.
    """
    return torch.clamp(lam_k + rho * g, min=0.0)


def multiplier_regression_loss(lam: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Supervised regression of the multiplier network toward the dual target (Eq. 9).

    .. math::

        L_\lambda(w) = \mathbb{E}_{x \sim \mathcal B}
            \left[ \left(\lambda_w(x) - \mathrm{sg}(\lambda^{k+1}_{\text{target}}(x))\right)^2 \right]

    Args:
        lam: multiplier network output, shape ``(B,)``, with gradient to ``w``.
        target: dual target, shape ``(B,)``; it is detached here (``sg``).
    """
    if lam.shape != target.shape:
        raise ValueError(f'shape mismatch: lam {tuple(lam.shape)} vs target {tuple(target.shape)}')
    return (lam - target.detach()).pow(2).mean()


def multiplier_ascent_loss(lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r"""Dual gradient ascent on the multiplier network, written as a loss to minimise (Eq. 3).

    .. math::

        L_\lambda(w) = -\mathbb{E}_{x \sim \mathcal B}\left[ \lambda_w(x)\, \mathrm{sg}(g(x)) \right]

    Its gradient is :math:`-\mathbb E[g(x) \nabla_w \lambda_w(x)]`, so a descent step on it is
    the ascent step :math:`w \leftarrow w + \alpha_w \mathbb E[g \nabla_w \lambda_w]` of Eq. 3.

    Args:
        lam: multiplier network output, shape ``(B,)``, with gradient to ``w``.
        g: constraint residual, shape ``(B,)``; it is detached here (``sg``).
    """
    if lam.shape != g.shape:
        raise ValueError(f'shape mismatch: lam {tuple(lam.shape)} vs g {tuple(g.shape)}')
    return -(lam * g.detach()).mean()


def violation_metric(lam: torch.Tensor, g: torch.Tensor, rho: float) -> float:
    r"""Average constraint violation that drives the penalty schedule (Sec. III-D).

    .. math::

        v = \sqrt{ \mathbb{E}_{x \sim \mathcal B}
            \left[ \max\left\{ g(x),\ -\frac{\lambda(x)}{\rho} \right\}^2 \right] }

    For a scalar multiplier and scalar aggregated residual (ASAC) this is :math:`|M|`.

    Args:
        lam: multiplier values, shape ``(B,)`` (or ``()``).
        g: constraint residual, same shape.
        rho: penalty factor, ``> 0``.
    """
    return float(clipped_residual(lam, g, rho).pow(2).mean().sqrt())


def penalty_step(rho: float, v: float, sigma: float, rho_max: float) -> float:
    r"""Penalty-factor schedule (Sec. III-D, Algorithm 1 lines 16-18).

    .. math::

        \rho \leftarrow \begin{cases} \min\{\sigma \rho,\ \rho_{\max}\} & v > 1/\rho \\
                                       \rho & \text{otherwise} \end{cases}

    Args:
        rho: current penalty factor, ``> 0``.
        v: violation metric from :func:`violation_metric`.
        sigma: growth factor, ``> 1``.
        rho_max: cap, ``>= rho``.
    """
    if not math.isfinite(v):
        raise FloatingPointError(f'violation metric is {v}; the cost critics have diverged')
    if v > 1.0 / rho:
        return min(sigma * rho, rho_max)
    return rho


def scalar_dual_step(lam: float, g_agg: float, rho: float) -> float:
    r"""Closed-form multiplier step of ASAC (augmented Lagrangian, one scalar multiplier).

    .. math::

        \lambda \leftarrow \max\{\lambda + \rho\, G,\ 0\},
        \qquad G = \mathbb{E}_{\mathcal B}[\hat F(x)] - d

    Args:
        lam: current scalar multiplier, ``>= 0``.
        g_agg: aggregated residual ``G``.
        rho: penalty factor, ``> 0``.
    """
    return max(lam + rho * g_agg, 0.0)
