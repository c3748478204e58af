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
    'bounded_slope_loss',
    'budget_dual_rates',
    'clipped_residual',
    'combine_twins',
    'cost_critic_target',
    'cost_discount',
    'dual_residual',
    'dual_target',
    'f_hat',
    'fpi_barrier_weight',
    'fpi_cdf_target',
    'fpi_policy_loss',
    'lagrangian_penalty',
    'logit_floor',
    'logit_floor_penalty',
    'multiplier_ascent_loss',
    'multiplier_regression_loss',
    'normalized_reward',
    'optimal_slack',
    'penalty_step',
    'rank_correlation',
    'reward_rms',
    'reward_rms_ema',
    'scalar_dual_step',
    'violation_metric',
]


def f_hat(q_c: torch.Tensor, pessimism: float = 1.0) -> torch.Tensor:
    r"""Monte Carlo estimate of the feasibility function at each state (Sec. V).

    .. math::

        \hat F_\psi(x) = \frac{1}{K} \sum_{k=1}^{K} \max_{i \in \{1,2\}} Q^c_{\psi_i}(x, a_k),
        \qquad a_k \sim \pi_\theta(\cdot | x)

    The max over the twin cost critics is the pessimistic (risk-averse) counterpart of the
    clipped double-Q trick. ``pessimism`` :math:`\beta < 1` replaces it by
    :func:`combine_twins` (``0``: the twins' mean), ``alam_cfgs.f_hat_pessimism``.

    Args:
        q_c: cost values of shape ``(N, K, B)``: critic ``i`` at action sample ``k`` for state ``b``.
        pessimism: :math:`\beta` in ``[0, 1]``; 1 (the paper's max) by default.

    Returns:
        ``F_hat`` of shape ``(B,)``.
    """
    if q_c.dim() != 3:
        raise ValueError(f'q_c must have shape (N, K, B), got {tuple(q_c.shape)}')
    if pessimism == 1.0:
        return q_c.max(dim=0).values.mean(dim=0)
    return combine_twins(q_c, pessimism).mean(dim=0)


def combine_twins(q: torch.Tensor, pessimism: float) -> torch.Tensor:
    r"""Combine twin critic values along dim 0, from their mean (0) to their max (1).

    .. math::

        \bar q + \beta\,(\max_i q_i - \bar q), \qquad \bar q = \frac{1}{N}\sum_i q_i

    ``pessimism`` :math:`\beta = 1` is the paper's pessimistic max; for two critics
    :math:`\max_i q_i - \bar q = |q_1 - q_2| / 2`.

    Args:
        q: values of shape ``(N, ...)``.
        pessimism: :math:`\beta` in ``[0, 1]``.
    """
    mean = q.mean(dim=0)
    if pessimism == 0.0:
        return mean
    return mean + pessimism * (q.max(dim=0).values - mean)


def cost_discount(cost_gamma: float, gamma: float) -> float:
    r"""Discount :math:`\gamma_c` of the feasibility function
    :math:`F^\pi(x) = \mathbb E[\sum_t \gamma_c^t c_t]` (Sec. II; not in the paper, which uses
    the reward's :math:`\gamma` for both).

    .. math::

        \gamma_c = \begin{cases} \gamma & \text{if } \texttt{cost\_gamma} = 0 \\
                    \texttt{cost\_gamma} & \text{otherwise} \end{cases}

    ``alam_cfgs.cost_gamma``. The constraint :math:`F(x) \le d` then looks about
    :math:`1 / (1 - \gamma_c)` steps ahead: at :math:`\gamma_c = 0.99` one cost step up to
    :math:`\ln d / \ln \gamma_c \approx 229` steps away (``d = 0.1``) makes a state infeasible,
    at 0.95 up to 45 steps away.

    Args:
        cost_gamma: ``alam_cfgs.cost_gamma``, in ``[0, 1)``; 0 means "the reward's".
        gamma: the reward's discount ``algo_cfgs.gamma``.

    Returns:
        :math:`\gamma_c`.
    """
    if not 0.0 <= cost_gamma < 1.0:
        raise ValueError(f'cost_gamma must be in [0, 1), got {cost_gamma}')
    return float(gamma) if cost_gamma == 0.0 else float(cost_gamma)


def cost_critic_target(
    c_t: torch.Tensor,
    done_t: torch.Tensor,
    q_c_tp1: torch.Tensor,
    gamma: float,
    pessimism: float = 1.0,
    value_max: float = math.inf,
) -> torch.Tensor:
    r"""Target of the twin cost critics (Sec. V, :math:`y_\psi`), with a bounded bootstrap.

    .. math::

        y_\psi = c + \gamma (1 - \text{done})
            \min\left\{\mathrm{comb}_\beta\big(\bar Q^c_{\psi_1}(x', a'), \bar Q^c_{\psi_2}(x', a')\big),\
            F_{\max}\right\}, \qquad a' \sim \pi_\theta(\cdot | x')

    with :func:`combine_twins`; the paper's target is :math:`\beta = 1` (max) and
    :math:`F_{\max} = \infty`. A value can never exceed :math:`F_{\max} = c_{\max} / (1-\gamma)`,
    so the cap only removes error. There is no entropy term in the cost target (unlike the
    reward target).

    Args:
        c_t: step cost, shape ``(B,)``.
        done_t: termination flag (1.0 for a true terminal state), shape ``(B,)``.
        q_c_tp1: target cost critics at the next state and sampled next action, shape ``(N, B)``.
        gamma: discount factor of the feasibility function.
        pessimism: :math:`\beta` of :func:`combine_twins`.
        value_max: :math:`F_{\max}`, the largest value a state can have.

    Returns:
        The regression target, shape ``(B,)``.
    """
    if q_c_tp1.dim() != 2 or q_c_tp1.shape[1:] != c_t.shape:
        raise ValueError(
            f'q_c_tp1 must have shape (N, B) with B={tuple(c_t.shape)}, got {tuple(q_c_tp1.shape)}',
        )
    q_next = torch.clamp(combine_twins(q_c_tp1, pessimism), max=value_max)
    return c_t + gamma * (1.0 - done_t) * q_next


def logit_floor(value_floor: float) -> float:
    r"""The pre-softplus output whose softplus is ``value_floor``: :math:`\log(e^{v} - 1)`.

    ``logit_floor(0.01)`` is -4.600; 0 (no floor) gives :math:`-\infty`.
    """
    if value_floor < 0.0:
        raise ValueError(f'a value floor must be >= 0, got {value_floor}')
    return math.log(math.expm1(value_floor)) if value_floor > 0.0 else -math.inf


def logit_floor_penalty(pre: torch.Tensor, floor: float) -> torch.Tensor:
    r"""Squared shortfall of pre-softplus outputs below ``floor``, averaged over the batch and
    summed over the twins (as their MSE losses are). Not in the paper (see below).

    .. math::

        L_{\text{floor}} = \sum_{i=1}^{N} \frac{1}{B} \sum_{b=1}^{B}
            \max(0,\ z_{\min} - z_{i,b})^2

    A softplus head reaches 0 only as its input :math:`z \to -\infty`. While the replay data
    holds no cost, every target is 0, the MSE keeps pushing :math:`z` down and Adam, which
    normalises the shrinking gradient, keeps the push at full speed. On SafetyPointCircle1-v0
    (no cost in a run's first 16k steps) the critics' mean :math:`z` at early-episode states was
    -34 at 50k steps, where the head's slope :math:`\sigma(z)` is 1e-15: their batch mean stayed
    below 0.3 from 22k to 86k steps while 5-35% of the steps were costly, and a fresh critic on
    the same replay data learned them in 4k steps (``scripts/replay_critic_lab.py``). Above the
    floor the penalty is exactly 0.

    Args:
        pre: pre-softplus outputs of the twin critics, shape ``(N, B)``.
        floor: :math:`z_{\min}` (:func:`logit_floor`); :math:`-\infty` gives 0.

    Returns:
        The penalty, a scalar.
    """
    if pre.dim() != 2:
        raise ValueError(f'pre must have shape (N, B), got {tuple(pre.shape)}')
    if floor == -math.inf:
        return pre.new_zeros(())
    return torch.relu(floor - pre).pow(2).mean(dim=1).sum()


def bounded_slope_loss(pre: torch.Tensor, target: torch.Tensor, min_slope: float) -> torch.Tensor:
    r"""Regression of a softplus head whose per-sample gradient weight is its slope held above
    ``min_slope``: a surrogate, summed over the twins, whose gradient is the one below (its value
    is not a loss; log the MSE instead). Not in the paper.

    .. math::

        \frac{\partial L}{\partial z_{i,b}} = \frac{2}{B}\,
            \big(\operatorname{softplus}(z_{i,b}) - y_b\big)\,\max\big(\sigma(z_{i,b}),\ s\big),
        \qquad L = \sum_{i=1}^{N} \frac{2}{B} \sum_{b=1}^{B}
            \operatorname{sg}\big[(\operatorname{softplus}(z_{i,b}) - y_b)
            \max(\sigma(z_{i,b}), s)\big]\, z_{i,b}

    The MSE of the softplus output has the gradient :math:`2(\operatorname{softplus}(z) - y)\,
    \sigma(z)` (``s = 0`` here): each sample speaks with the weight :math:`\sigma(z)`, the head's
    slope. Where a critic has once been pushed far below 0, its costly states have almost no
    weight against the costless ones (at :math:`z = -12`, :math:`6 \times 10^{-6}`), and it cannot
    learn them back. On SafetyPointGoal1-v0 (seed 0, 200k steps) the cost critics' median
    pre-softplus output on the newest replay data was -12 while the realised discounted cost there
    averaged 6.4, and :math:`Q^c` was 0.20.

    ``s = 1`` is the matching loss of the softplus (Helmbold, Kivinen and Warmuth, 1999; the
    canonical link of a generalised linear model): the error itself is the gradient. For every
    ``s`` the weight depends on :math:`z` only, so the stationary point at each :math:`(x, a)`
    is :math:`\operatorname{softplus}(z) = \mathbb{E}[y]`, the MSE's conditional mean; where
    :math:`\sigma(z) \ge s` the gradient is the MSE's. ``s`` bounds how much less a saturated
    sample weighs than an unsaturated one: by :math:`1/s` at most.

    Args:
        pre: pre-softplus outputs of the twin critics, shape ``(N, B)``.
        target: regression targets :math:`y`, shape ``(B,)``.
        min_slope: :math:`s` in ``[0, 1]``.

    Returns:
        The surrogate, a scalar (its gradient is the one above).
    """
    if pre.dim() != 2 or pre.shape[1:] != target.shape:
        raise ValueError(f'pre must have shape (N, B) with B={tuple(target.shape)}, got {tuple(pre.shape)}')
    if not 0.0 <= min_slope <= 1.0:
        raise ValueError(f'min_slope must be in [0, 1], got {min_slope}')
    with torch.no_grad():
        weight = torch.clamp(torch.sigmoid(pre), min=min_slope)
        error = torch.nn.functional.softplus(pre) - target
    return 2.0 * (error * weight * pre).mean(dim=1).sum()


def smoothed_action(action: torch.Tensor, noise: torch.Tensor, std: float) -> torch.Tensor:
    r"""The action a cost critic regresses at under ``alam_cfgs.cost_critic_action_noise`` (a
    departure from the paper, docs/algorithms.md):

    .. math:: \tilde a = \mathrm{clip}(a + \sigma \xi, -1, 1), \quad \xi \sim \mathcal N(0, I),

    with the target of the stored ``(x, a)`` unchanged, so the critic fits the mean of ``F``
    over a ball of radius about ``sigma`` around the data's actions: a slope in the action only
    where the data show one at that scale (TD3's target smoothing, applied to the regressed
    action). ``noise`` is the standard normal draw, ``action``'s shape.
    """
    if std < 0:
        raise ValueError(f'std must be >= 0, got {std}')
    return (action + std * noise).clamp(-1.0, 1.0)


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


def augmented_penalty(
    lam: torch.Tensor,
    g: torch.Tensor,
    rho: float,
    slope_max: float = math.inf,
) -> torch.Tensor:
    r"""Constraint terms of the augmented-Lagrangian policy loss (Eq. 16), per state.

    .. math::

        \lambda(x)\, m(x) + \frac{\rho}{2}\, m(x)^2,
        \qquad m(x) = \max\left\{ -\frac{\lambda(x)}{\rho},\ g(x) \right\}

    Its slope in ``g`` is :math:`\lambda + \rho m = [\lambda + \rho g]_+`, the next multiplier
    estimate of the dual update (Sec. III-C). With ``slope_max`` finite (the plugin passes the
    multiplier cap, ``alam_cfgs.penalty_slope: capped``) the slope is projected like the dual
    target, :math:`\min\{[\lambda + \rho g]_+, \lambda_{\max}\}`: quadratic up to
    :math:`m^* = (\lambda_{\max} - \lambda)/\rho`, then linear with slope
    :math:`\lambda_{\max}`,

    .. math::

        \lambda m_c + \frac{\rho}{2} m_c^2 + \lambda_{\max} (m - m_c), \qquad m_c = \min\{m, m^*\}.

    Where ``g <= m*`` both are the same; the paper's is ``slope_max = inf``.

    The caller passes ``lam`` detached (the multiplier is fixed during the primal step) and ``g``
    with gradient to the policy. Where the constraint is inactive (``g < -lam/rho``) the value is
    the constant ``-lam^2 / (2 rho)`` and no gradient reaches the policy.

    Args:
        lam: multiplier values (no gradient), shape ``(B,)`` (or ``()`` for ASAC), at most
            ``slope_max``.
        g: constraint residual, same shape.
        rho: penalty factor, ``> 0``.
        slope_max: largest slope of the penalty in ``g`` (default: none, the paper).

    Returns:
        Per-state penalty, same shape as ``g``.
    """
    m = clipped_residual(lam, g, rho)
    if math.isinf(slope_max):
        return lam * m + 0.5 * rho * m.pow(2)
    m_c = torch.minimum(m, (slope_max - lam) / rho)
    return lam * m_c + 0.5 * rho * m_c.pow(2) + slope_max * (m - m_c)


def lagrangian_penalty(lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r"""Constraint term of the standard state-wise Lagrangian (Eq. 3, SAC-LagNet / FAC), per state.

    .. math::

        \lambda(x)\, g(x)

    Args:
        lam: multiplier values (no gradient), shape ``(B,)``.
        g: constraint residual, same shape.
    """
    return lam * g


def dual_residual(g: torch.Tensor, feasible_gain: float = 1.0) -> torch.Tensor:
    r"""The residual a state-wise multiplier network answers to in its dual step (Eq. 9's
    :math:`g`, Eq. 3's for the ascent variants), with the feasible side scaled.

    .. math::

        g_\lambda(x) = \begin{cases} g(x) & g(x) > 0 \\ \kappa\, g(x) & g(x) \le 0 \end{cases}

    :math:`\kappa = 1` is the paper. Not in the paper otherwise (``alam_cfgs.dual_feasible_gain``):
    :math:`g = \hat F - d \ge -d` because :math:`\hat F \ge 0`, while a violation is bounded
    only by the cost's own range (``cost_max / (1 - gamma_c) - d``, 4.9 at ``gamma_c`` 0.8). So
    per cycle the dual target can rise by up to :math:`\rho\,4.9` at a violating state but
    fall by at most :math:`\rho\, d` at a feasible one, and in a run whose states change sides
    from cycle to cycle the multiplier stays near its cap on both. :math:`\kappa = 1/d` gives
    the feasible side the scale of a unit violation. The penalty (Eq. 16) and the penalty
    schedule's violation metric keep the plain :math:`g`.

    Args:
        g: constraint residual :math:`\hat F - d`, any shape.
        feasible_gain: :math:`\kappa \ge 1`, the factor on :math:`g \le 0`.
    """
    if feasible_gain == 1.0:
        return g
    return torch.where(g > 0, g, feasible_gain * g)


def dual_target(lam_k: torch.Tensor, g: torch.Tensor, rho: float, lam_max: float = math.inf) -> torch.Tensor:
    r"""Dual target of the multiplier update (Sec. III-C), projected onto ``[0, lam_max]``.

    .. math::

        \lambda^{k+1}_{\text{target}}(x) = \min\left\{\max\left\{ \lambda^k(x) + \rho^k g(x),\ 0 \right\},\
            \lambda_{\max}\right\}

    The paper's target is :math:`\lambda_{\max} = \infty`. At a state that no policy can make
    feasible, :math:`g > 0` in every cycle and the paper's target grows without bound; the
    upper bound is the safeguard of safeguarded augmented-Lagrangian methods (bounded multiplier
    estimates).

    Args:
        lam_k: multiplier at the start of the cycle (frozen copy), shape ``(B,)``.
        g: constraint residual under the current policy, shape ``(B,)``.
        rho: penalty factor, ``> 0``.
        lam_max: upper bound of the multiplier.
    """
    return torch.clamp(lam_k + rho * g, min=0.0, max=lam_max)


def multiplier_regression_loss(lam: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    r"""Supervised regression of the multiplier network toward the dual target (Eq. 9).

    .. math::

        L_\lambda(w) = \mathbb{E}_{x \sim \mathcal B}
            \left[ \left(\lambda_w(x) - \mathrm{sg}(\lambda^{k+1}_{\text{target}}(x))\right)^2 \right]

    The network's output is taken *before* its cap (``alam_cfgs.multiplier_max``): the target
    lies in ``[0, lam_max]``, so an output above the cap is pulled back to it. Through the
    capped output it would get no gradient at all, and stay at the cap for good once there (on
    SafetyPointCircle1-v0 every state's output sat at 10.6-14.4 while the policy was feasible at
    half of them, targets below 10).

    Args:
        lam: multiplier network output before the cap, shape ``(B,)``, with gradient to ``w``.
        target: dual target, shape ``(B,)``; it is detached here (``sg``).
    """
    if lam.shape != target.shape:
        raise ValueError(f'shape mismatch: lam {tuple(lam.shape)} vs target {tuple(target.shape)}')
    return (lam - target.detach()).pow(2).mean()


def multiplier_ascent_loss(lam: torch.Tensor, g: torch.Tensor, lam_max: float = math.inf) -> torch.Tensor:
    r"""Dual gradient ascent on the multiplier network, written as a loss to minimise (Eq. 3),
    projected onto ``[0, lam_max]``.

    .. math::

        L_\lambda(w) = -\mathbb{E}_{x \sim \mathcal B}\left[ m(x)\, \lambda_w(x)\, \mathrm{sg}(g(x)) \right],
        \qquad m(x) = 0 \text{ if } \lambda_w(x) \ge \lambda_{\max} \text{ and } g(x) > 0, \text{ else } 1

    Its gradient is :math:`-\mathbb E[m\, g(x) \nabla_w \lambda_w(x)]`, so a descent step on it
    is the ascent step :math:`w \leftarrow w + \alpha_w \mathbb E[m\, g \nabla_w \lambda_w]` of
    Eq. 3 (the paper: :math:`m = 1`, no cap). At or above the cap a state's multiplier is not
    pushed further up, and is still pushed down where the constraint holds; the output is taken
    before the cap for that reason (see :func:`multiplier_regression_loss`).

    Args:
        lam: multiplier network output before the cap, shape ``(B,)``, with gradient to ``w``.
        g: constraint residual, shape ``(B,)``; it is detached here (``sg``).
        lam_max: the cap.
    """
    if lam.shape != g.shape:
        raise ValueError(f'shape mismatch: lam {tuple(lam.shape)} vs g {tuple(g.shape)}')
    g = g.detach()
    keep = ~((lam.detach() >= lam_max) & (g > 0))
    return -(lam * g * keep).mean()


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


def rank_correlation(x: torch.Tensor, y: torch.Tensor) -> float:
    r"""Spearman's rank correlation of two 1-D samples (average ranks for ties).

    .. math::

        r_s = \mathrm{corr}(\mathrm{rank}(x), \mathrm{rank}(y))

    NaN when there are fewer than 3 pairs or either sample has no spread.
    """
    if x.shape != y.shape or x.dim() != 1:
        raise ValueError(f'x and y must be 1-D of one length, got {tuple(x.shape)} and {tuple(y.shape)}')
    if len(x) < 3:
        return float('nan')
    rx, ry = average_ranks(x.double()), average_ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denom = (rx.pow(2).sum() * ry.pow(2).sum()).sqrt()
    if denom == 0:
        return float('nan')
    return float((rx * ry).sum() / denom)


def average_ranks(values: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n, tied values sharing their average rank."""
    order = torch.argsort(values)
    ranks = torch.empty_like(values)
    ranks[order] = torch.arange(1, len(values) + 1, dtype=values.dtype, device=values.device)
    uniq, inverse = torch.unique(values, return_inverse=True)
    sums = torch.zeros(len(uniq), dtype=values.dtype, device=values.device).index_add_(0, inverse, ranks)
    counts = torch.zeros(len(uniq), dtype=values.dtype, device=values.device).index_add_(0, inverse, torch.ones_like(ranks))
    return (sums / counts)[inverse]


# --------------------------------------------------------------------------------------------
# SAC-FPI (Yang et al., "Feasible Policy Iteration", arXiv 2304.08845): the paper's baseline.
# Its feasibility function is a *constraint decay function* (CDF), not a discounted cost value:
# G(x, a) = E[gamma^T] with T the first step with cost > 0 (0 if that never happens), in [0, 1].


def fpi_cdf_target(
    cost: torch.Tensor,
    done: torch.Tensor,
    g_next: torch.Tensor,
    gamma: float,
) -> torch.Tensor:
    r"""Bootstrap target of the twin CDF critics (FPI's risky Bellman equation).

    .. math::

        y_G = c + (1 - \mathrm{done})(1 - c)\,\gamma\,
              \mathrm{clip}\big(\max_i \bar G_i(x', a'), 0, 1\big),
        \qquad c = \mathbf 1[\mathrm{cost} > 0],\ a' \sim \pi(\cdot|x')

    A step with cost ends the recursion (``G = 1``: the first violation is now); otherwise the
    decay ``gamma`` applies to the pessimistic (max) next value, clipped to the CDF's range.

    Args:
        cost: raw step costs, shape ``(B,)`` (any positive value counts as a violation).
        done: terminal flags (1.0 = terminated, not truncated), shape ``(B,)``.
        g_next: target CDF values at ``(x', a')``, shape ``(N, B)``.
        gamma: discount (decay) factor.

    Returns:
        The target, shape ``(B,)``, in ``[0, 1]``.
    """
    if g_next.dim() != 2:
        raise ValueError(f'g_next must have shape (N, B), got {tuple(g_next.shape)}')
    c = (cost > 0).to(g_next.dtype)
    return c + (1.0 - done) * (1.0 - c) * gamma * g_next.max(dim=0).values.clamp(0.0, 1.0)


def fpi_barrier_weight(
    g: torch.Tensor,
    p_f: float,
    t: float,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""The clipped constraint and the linearised log-barrier weight of FPI's feasible update.

    .. math::

        h = \mathrm{clip}(G - p_f, -p_f, -\epsilon), \qquad
        b = t\left(-\frac{1}{\mathrm{sg}(h)} - \frac{1}{p_f}\right) \ge 0

    ``b`` is the derivative of the barrier :math:`-t \log(-h)` minus its value at ``G = 0``
    (so ``b = 0`` where ``G <= 0`` and grows as ``G`` approaches ``p_f``); it is held constant
    within a step (no gradient), ``h`` carries the gradient to the policy inside the clip range.

    Returns:
        ``(h, b)``, each shaped like ``g``.
    """
    h = torch.clamp(g - p_f, -p_f, -eps)
    b = t * (-1.0 / h.detach() - 1.0 / p_f)
    return h, b


def fpi_policy_loss(
    q: torch.Tensor,
    g: torch.Tensor,
    log_prob: torch.Tensor,
    alpha: float,
    p_f: float,
    t: float,
    eps: float = 1e-6,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    r"""FPI's region-wise policy loss (feasible policy improvement), one batch.

    A state is feasible when :math:`G(x, a) < p_f` for the sampled action (``G - p_f < -eps``).
    On feasible states the actor maximises ``Q`` under the barrier, normalised by ``1 + b`` so
    the step stays bounded as ``b`` grows; on infeasible states it only decreases ``G``; the
    entropy term applies everywhere. Both regions' means are over the whole batch, so their
    gradients add:

    .. math::

        L = \frac{1}{B}\sum_x \Big[\mathbf 1_{\mathrm{feas}}(x)\,\frac{-Q(x,a) + b(x)\,h(x)}{1 + b(x)}
            + \alpha \log\pi(a|x)\Big]
            + \frac{1}{B}\sum_x \mathbf 1_{\mathrm{infeas}}(x)\,G(x, a)

    with ``h, b`` from :func:`fpi_barrier_weight`, ``a ~ pi(.|x)`` reparameterised, ``Q`` the
    min of the reward twins and ``G`` the max of the CDF twins at ``(x, a)``.

    Args:
        q, g, log_prob: shape ``(B,)``, with gradient to the policy.
        alpha: SAC temperature.
        p_f: feasibility threshold on ``G``.
        t: barrier coefficient.

    Returns:
        ``(loss, stats)``: the scalar loss and, detached, ``feasible`` (bool mask, ``(B,)``)
        and ``barrier`` (mean of ``b / (1 + b)`` over feasible states; 0 if there are none).
    """
    feasible = (g - p_f < -eps).detach()
    h, b = fpi_barrier_weight(g, p_f, t, eps)
    mask = feasible.to(q.dtype)
    feas_loss = (mask * (-q + b * h) / (1.0 + b) + alpha * log_prob).mean()
    infeas_loss = ((1.0 - mask) * g).mean()
    weight = (b / (1.0 + b)).detach()
    barrier = weight[feasible].mean() if feasible.any() else torch.zeros((), dtype=q.dtype, device=q.device)
    return feas_loss + infeas_loss, {'feasible': feasible, 'barrier': barrier}


def reward_rms_ema(ema: float, batch_mean_square: float, rate: float) -> float:
    r"""One step of the exponential moving average of the mean squared reward.

    .. math::

        m_t = (1 - \beta)\, m_{t-1} + \beta\, \mathbb E_{\mathcal B}[r^2]

    Not in the paper: the plugin weighs the constraint penalty against the reward's own scale
    (see :func:`reward_rms`). ``ema`` starts at 0; :func:`reward_rms` corrects the start-up bias.

    Args:
        ema: the average so far, :math:`m_{t-1}` (0 before the first step).
        batch_mean_square: :math:`\mathbb E_{\mathcal B}[r^2]` of the replay batch of this step.
        rate: :math:`\beta \in (0, 1]`.
    """
    if not 0.0 < rate <= 1.0:
        raise ValueError(f'rate must be in (0, 1], got {rate}')
    return (1.0 - rate) * ema + rate * batch_mean_square


def normalized_reward(reward: torch.Tensor, rms: float, gamma: float) -> torch.Tensor:
    r"""The reward in units of :math:`s_t / (1 - \gamma)`, what the reward critics learn under
    ``alam_cfgs.penalty_scale: normalize``.

    .. math::

        \tilde r = (1 - \gamma)\, r / s_t

    Not in the paper. :math:`s_t / (1 - \gamma)` is the value of a reward of the task's RMS
    received forever, so the critics' values are of order 1 whatever the task's reward. With
    :math:`s_t` from :func:`reward_rms`, a task whose rewards are all :math:`k` times larger gives
    the critics the same targets (:math:`s_t` is :math:`k` times larger too), so the soft Q values,
    the temperature, the multiplier, its cap and rates, and every gradient norm the clips see are
    those of the unscaled task: the whole algorithm is invariant to the reward's scale, not only
    the penalty's weight (``reward_rms``). The soft target is SAC's on :math:`\tilde r` with the
    temperature :math:`(1 - \gamma)\alpha`; the policy loss reads :math:`\tilde Q / (1 - \gamma)`,
    so it is the ``reward_rms`` loss divided by :math:`s_t`.

    Args:
        reward: rewards of a replay batch, any shape.
        rms: :math:`s_t > 0`.
        gamma: the discount :math:`\gamma \in [0, 1)`.
    """
    if not rms > 0.0:
        raise ValueError(f'rms must be > 0, got {rms}')
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f'gamma must be in [0, 1), got {gamma}')
    return reward * ((1.0 - gamma) / rms)


def reward_rms(ema: float, steps: int, rate: float, floor: float = 1e-6) -> float:
    r"""Root mean square of the reward from :func:`reward_rms_ema`, bias-corrected as Adam's moments.

    .. math::

        s_t = \max\left\{\sqrt{m_t / (1 - (1 - \beta)^t)},\ s_{\min}\right\}

    The plugin multiplies the constraint penalty of the policy loss by :math:`s_t`
    (``alam_cfgs.penalty_scale: reward_rms``): :math:`\mathbb E[\alpha\log\pi - Q] + s_t\,
    \mathbb E[\mathrm{penalty}]` has the minimiser of the paper's loss on the reward
    :math:`r / s_t` (with temperature :math:`\alpha / s_t`), so the multiplier, its cap and its
    rates meet a reward of unit scale whatever the task's own. Before any step (``steps = 0``)
    :math:`s = 1`, the paper's weight.

    Args:
        ema: :math:`m_t`.
        steps: :math:`t`, the number of :func:`reward_rms_ema` steps taken.
        rate: :math:`\beta`.
        floor: :math:`s_{\min} > 0`, so that a task whose rewards are all 0 keeps a penalty.
    """
    if steps <= 0:
        return 1.0
    correction = 1.0 - (1.0 - rate) ** steps
    return max(math.sqrt(max(ema, 0.0) / correction), floor)


def budget_dual_rates(
    total_steps: int,
    m_lambda: int,
    multiplier_lr: float,
    reference_steps: int,
    m_lambda_min: int,
    multiplier_lr_max: float,
) -> tuple[int, float]:
    r"""The dual cadence and the multiplier's rate for a run of ``total_steps`` (not in the paper).

    The paper's ``m_lambda`` and multiplier rate (Table I: 200, 1e-5) are set for
    :math:`T_0` = 4e6 steps. For a budget :math:`T`, with :math:`s = T_0 / T`:

    .. math::

        m = \mathrm{clip}\left(\mathrm{round}(m_0 / \sqrt{s}),\ m_{\min},\ m_0\right),
        \qquad \eta = \mathrm{clip}\left(\eta_0\, s,\ \eta_0,\ \eta_{\max}\right)

    The rate grows with :math:`s` so that the multiplier can move as far in :math:`T` steps as
    the paper's in :math:`T_0`; the cadence shortens with :math:`\sqrt s`, so that the number of
    dual cycles also grows. At :math:`T \geq T_0` both are the paper's. With the shipped
    bounds (20, 1e-3) this gives the rates the known-answer tasks were tuned with (20 and 1e-3
    at 8k and 40k steps) and the Circle grid's rate (4e-4, with a cadence of 32) at 100k.

    Args:
        total_steps: the run's budget :math:`T` in environment steps, ``> 0``.
        m_lambda: :math:`m_0`, policy steps between dual cycles at :math:`T_0`.
        multiplier_lr: :math:`\eta_0`, the multiplier's rate at :math:`T_0`.
        reference_steps: :math:`T_0`.
        m_lambda_min: :math:`m_{\min}`, the shortest cadence.
        multiplier_lr_max: :math:`\eta_{\max}`, the largest rate.

    Returns:
        ``(m, eta)``.
    """
    if total_steps <= 0 or reference_steps <= 0:
        raise ValueError(f'total_steps and reference_steps must be > 0, got {total_steps}, {reference_steps}')
    scale = reference_steps / total_steps
    m = int(round(m_lambda / math.sqrt(scale)))
    m = max(min(m, m_lambda), min(m_lambda_min, m_lambda))
    lr = min(max(multiplier_lr * scale, multiplier_lr), max(multiplier_lr_max, multiplier_lr))
    return m, lr
