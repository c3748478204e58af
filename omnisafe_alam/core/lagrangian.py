"""The state-wise Lagrangian family on the shared training machinery.

:class:`StatewiseSAC`: twin cost critics, ``F_hat``, the multiplier (a network or a scalar), the
penalty schedule and the dual cycle; the base of SAC-ALaM, SAC-ALaM-GA, SAC-LagNet and ASAC.
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import torch
from torch import nn, optim
from torch.nn.utils.clip_grad import clip_grad_norm_

from omnisafe_alam.core import diffusion as D
from omnisafe_alam.core import functional as F
from omnisafe_alam.core.models import DualState, MultiplierNet, StatewiseActorQCritic
from omnisafe_alam.core.training import StatewiseOffPolicy, _check_finite

__all__ = ['StatewiseSAC']

_QUANTILES = (0.1, 0.5, 0.9)
_QUANTILE_NAMES = ('Q10', 'Q50', 'Q90')
#: norms of the actor-parameter gradients of the policy loss's three terms (every dual cycle)
_GRAD_KEYS = ('Actor/GradNormQ', 'Actor/GradNormEntropy', 'Actor/GradNormPenalty')
#: the Gaussian actor's batch-mean standard deviation (before the tanh; every dual cycle), under
#: OmniSafe's on-policy name for it
_STD_KEY = 'Train/PolicyStd'


class StatewiseSAC(StatewiseOffPolicy):
    r"""Base of SAC-ALaM, SAC-ALaM-GA, SAC-LagNet and ASAC (not registered itself).

    Deliberate departures from OmniSafe's :class:`SAC` (the paper, Sec. V):

    - **Twin cost critics**, trained toward
      :math:`y_\psi = c + \gamma(1-d)\min\{\mathrm{comb}_\beta(\bar Q^c_{\psi_1}, \bar Q^c_{\psi_2})(x', a'),
      c_{\max}/(1-\gamma)\}`, :math:`a' \sim \pi(\cdot|x')`: :math:`\beta = 1` is the paper's max,
      the default :math:`\beta = 0` their mean (``alam_cfgs.cost_target_pessimism``, see
      docs/algorithms.md); ``F_hat`` combines them the same way with its own
      ``alam_cfgs.f_hat_pessimism`` (paper: max; default: mean). OmniSafe has one cost critic and
      a deterministic next action.
    - The cost is the raw environment cost (``cost_normalize`` must be false), optionally
      clipped to the indicator :math:`\mathbf 1[c > 0]` (``alam_cfgs.cost_indicator``).
    - The policy loss is SAC's plus a variant-specific constraint penalty on
      :math:`g(x) = \hat F(x) - d` (see :meth:`_penalty`).
    - Every ``m_lambda`` policy steps, a dual cycle: ``n_dual`` multiplier steps
      (:meth:`_update_multiplier`), then the penalty schedule if the variant uses one.

    A variant defines :meth:`_penalty` and :meth:`_multiplier_loss` (or overrides
    :meth:`_update_multiplier`), and sets :attr:`_uses_penalty_schedule`.
    """

    _state_attributes = (
        *StatewiseOffPolicy._state_attributes,
        '_policy_steps',
        '_dual_stats',
        '_reward_ms',
        '_reward_ms_steps',
        '_infeasible_since',
    )
    _optional_log_keys = (_STD_KEY,)
    #: whether rho follows the schedule of Sec. III-D after each dual cycle
    _uses_penalty_schedule: bool = True
    #: whether the variant has a state-wise multiplier network (False for ASAC)
    _statewise: bool = True

    _actor_critic: StatewiseActorQCritic
    _dual: DualState
    _multiplier_optimizer: optim.Optimizer | None

    # ------------------------------------------------------------------ set-up
    def _init_model(self) -> None:
        self._cfgs.model_cfgs.critic['num_critics'] = 2
        alam = self._cfgs.alam_cfgs
        multiplier = None
        if self._statewise:
            multiplier = MultiplierNet(
                obs_dim=self._env.observation_space.shape[0],  # type: ignore[index]
                hidden_sizes=alam.multiplier_hidden_sizes,
                activation=alam.multiplier_activation,
                output=alam.multiplier_output,
                max_value=alam.multiplier_max,
                init_value=alam.multiplier_init if alam.multiplier_init >= 0 else None,
            )
        self._actor_critic = StatewiseActorQCritic(
            obs_space=self._env.observation_space,
            act_space=self._env.action_space,
            model_cfgs=self._cfgs.model_cfgs,
            epochs=self._epochs,
            multiplier=multiplier,
            cost_output=alam.cost_critic_output,
            reward_layer_norm=alam.reward_critic_layer_norm,
            cost_hidden_sizes=alam.cost_critic_hidden_sizes,
        ).to(self._device)
        if alam.cost_polyak > 0:
            self._actor_critic.cost_tau = alam.cost_polyak
        if alam.cost_critic_output == 'softplus':
            self._cost_logit_floor = F.logit_floor(alam.cost_critic_floor * alam.d)
            self._cost_min_slope = float(alam.cost_critic_min_slope)
        self._cost_action_noise = float(alam.cost_critic_action_noise)

    def _init(self) -> None:
        super()._init()
        alam = self._cfgs.alam_cfgs
        self._dual = DualState(alam.rho_init, alam.lambda_init).to(self._device)
        #: policy steps between dual cycles and the multiplier's rate (``alam_cfgs.dual_rates``)
        self._m_lambda, self._multiplier_lr = alam.m_lambda, alam.multiplier_lr
        if alam.dual_rates == 'budget':
            self._m_lambda, self._multiplier_lr = F.budget_dual_rates(
                int(self._cfgs.train_cfgs.total_steps),
                alam.m_lambda,
                alam.multiplier_lr,
                alam.dual_rates_reference_steps,
                alam.dual_rates_m_lambda_min,
                alam.dual_rates_multiplier_lr_max,
            )
        self._multiplier_optimizer = None
        if self._actor_critic.multiplier is not None:
            self._multiplier_optimizer = optim.Adam(
                self._actor_critic.multiplier.parameters(),
                lr=self._multiplier_lr,
            )
        self._policy_steps = 0
        #: moving average of the batches' mean squared reward and its step count (penalty_scale)
        self._reward_ms = 0.0
        self._reward_ms_steps = 0
        #: gradient step of the first dual cycle of the current run of cycles with no feasible
        #: batch state (None: the last cycle had one); see ``alam_cfgs.infeasible_warning_steps``
        self._infeasible_since: int | None = None
        self._dual_stats: dict[str, float] = {
            'Loss/Loss_multiplier': 0.0,
            'Metrics/PenaltyScale': 1.0,
            **dict.fromkeys(_GRAD_KEYS, 0.0),
            'Metrics/Violation': 0.0,
            'Metrics/FeasibleFrac': 0.0,
            **{f'Metrics/Multiplier{name}': 0.0 for name in _QUANTILE_NAMES},
        }
        if self._has_density:
            self._dual_stats[_STD_KEY] = 0.0

    def _risk_settings(self) -> dict[str, Any]:
        alam = self._cfgs.alam_cfgs
        return {
            'risk_fn': self._f_hat_no_grad,
            'kind': 'discounted_cost',
            'indicator': alam.cost_indicator,
            'window': alam.calibration_window,
            'gamma': self._cost_gamma,
        }

    @functools.cached_property
    def _cost_gamma(self) -> float:
        """Discount of the feasibility function ``F`` (``alam_cfgs.cost_gamma``; 0: the reward's
        ``algo_cfgs.gamma``, the paper's single discount); read once, the cost target needs it
        every gradient step."""
        return F.cost_discount(self._cfgs.alam_cfgs.cost_gamma, self._cfgs.algo_cfgs.gamma)

    def _init_log(self) -> None:
        """Register the state-wise keys beside OmniSafe's SAC keys.

        +------------------------+---------------------------------------------------------+
        | Key                    | Meaning                                                 |
        +========================+=========================================================+
        | Metrics/EpUnsafeSteps  | steps with cost > 0 per episode                         |
        +------------------------+---------------------------------------------------------+
        | Metrics/MultiplierMean | batch mean of lambda(x) in the policy loss              |
        +------------------------+---------------------------------------------------------+
        | Metrics/MultiplierMax  | batch max of lambda(x) in the policy loss               |
        +------------------------+---------------------------------------------------------+
        | Metrics/Rho            | penalty factor rho                                      |
        +------------------------+---------------------------------------------------------+
        | Metrics/Violation      | violation metric v of the last dual cycle (Sec. III-D)  |
        +------------------------+---------------------------------------------------------+
        | Metrics/FeasibleFrac   | fraction of batch states with F_hat <= d (last cycle)   |
        +------------------------+---------------------------------------------------------+
        | Value/F_hat            | batch mean of F_hat(x) in the policy loss               |
        +------------------------+---------------------------------------------------------+
        | Loss/Loss_multiplier   | multiplier loss of the last dual step                   |
        +------------------------+---------------------------------------------------------+
        | Metrics/PenaltyScale   | the reward unit s: the replay batches' reward RMS (1    |
        |                        | with ``penalty_scale: none``); the penalty's weight     |
        |                        | under ``reward_rms``, the reward critics' unit (of      |
        |                        | Value/reward_critic) under ``normalize``; the           |
        |                        | multiplier is in units of s under both                  |
        +------------------------+---------------------------------------------------------+
        | Actor/GradNormQ,       | at the last dual cycle, the norm of the actor-parameter |
        | GradNormEntropy,       | gradient of each term of the policy loss alone: -Q,     |
        | GradNormPenalty        | alpha log pi, the (weighted) constraint penalty         |
        +------------------------+---------------------------------------------------------+
        | Train/PolicyStd        | at the last dual cycle, the Gaussian actor's batch-mean |
        |                        | std before the tanh (not logged for a diffusion actor)  |
        +------------------------+---------------------------------------------------------+
        | Metrics/MultiplierQ10, | 10%, 50% and 90% quantiles of lambda(x) over the batch  |
        | Q50, Q90               | of the last dual cycle, after its update                |
        +------------------------+---------------------------------------------------------+
        | Calibration/StartFHat  | over the last ``calibration_window`` episodes: F_hat at |
        | Calibration/StartCost  | the start state when the episode began, the realised    |
        | Calibration/StartBias  | discounted cost, their mean difference (> 0:            |
        | Calibration/           | pessimistic) and Spearman's rank correlation (see       |
        | StartRankCorr          | :meth:`StatewiseOffPolicyAdapter.calibration`)          |
        +------------------------+---------------------------------------------------------+
        """
        super()._init_log()
        for key in (
            'Metrics/MultiplierMean',
            'Metrics/MultiplierMax',
            'Metrics/Rho',
            'Value/F_hat',
            *self._dual_stats,
        ):
            self._logger.register_key(key)

    def _checkpoint_items(self) -> dict[str, Any]:
        return {**self._actor_critic.checkpoint_items(), 'dual': self._dual}

    def _critics(self) -> tuple[nn.Module, ...]:
        return (self._actor_critic.reward_critic, self._actor_critic.cost_critic)

    # ------------------------------------------------------------ estimates
    @property
    def _rho(self) -> float:
        return float(self._dual.rho)

    def _residual(self, obs: torch.Tensor) -> torch.Tensor:
        r"""Constraint residual :math:`g(x) = \hat F(x) - d`, shape ``(B,)``.

        The K actions are reparameterised samples drawn in one batched call, so under grad
        mode the gradient reaches the policy through ``F_hat``; callers wrap it in
        ``torch.no_grad()`` everywhere except the policy loss. With
        ``alam_cfgs.f_hat_policy: deterministic`` the one action is the policy's mean.
        """
        alam = self._cfgs.alam_cfgs
        actions = self._f_actions(obs)  # (K, B, A)
        q_c = self._actor_critic.cost_critic(obs.expand(actions.shape[0], *obs.shape), actions)
        return F.f_hat(torch.stack(q_c), alam.f_hat_pessimism) - alam.d

    def _f_actions(self, obs: torch.Tensor) -> torch.Tensor:
        """Actions at which ``F`` is evaluated: ``(K, B, A)`` policy samples, or ``(1, B, A)`` means."""
        actor = self._actor_critic.actor
        if self._cfgs.alam_cfgs.f_hat_policy == 'deterministic':
            return actor.predict(obs, deterministic=True).unsqueeze(0)
        k = self._cfgs.alam_cfgs.K
        if not self._has_density:  # a diffusion actor: K chains, differentiable end to end
            return actor.sample(obs.repeat(k, *([1] * (obs.dim() - 1))))[0].view(k, *obs.shape[:-1], -1)
        return actor(obs).rsample((k,))

    def _f_hat_no_grad(self, obs: torch.Tensor) -> torch.Tensor:
        """``F_hat`` at observations, without gradient (the adapter's risk estimate)."""
        with torch.no_grad():
            return self._residual(obs) + self._cfgs.alam_cfgs.d

    def _multiplier_at(self, obs: torch.Tensor) -> torch.Tensor:
        """Multiplier at each state, ``(B,)``, with gradient to the multiplier network."""
        assert self._actor_critic.multiplier is not None
        return self._actor_critic.multiplier(obs)

    def _multiplier_uncapped(self, obs: torch.Tensor) -> torch.Tensor:
        """The multiplier network's output before ``multiplier_max``, ``(B,)``: what its losses train."""
        assert self._actor_critic.multiplier is not None
        return self._actor_critic.multiplier.uncapped(obs)

    # ------------------------------------------------------------ variant hooks
    def _penalty(self, lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """Per-state constraint penalty of the policy loss (``lam`` detached, ``g`` not)."""
        raise NotImplementedError

    def _multiplier_loss(
        self,
        obs: torch.Tensor,
        g: torch.Tensor,
        frozen: nn.Module,
    ) -> torch.Tensor:
        """Loss of one multiplier step on a batch (``g`` and ``frozen`` carry no gradient)."""
        raise NotImplementedError

    # ------------------------------------------------------------ losses and updates
    def _cost_critic_target(
        self,
        cost: torch.Tensor,
        done: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> tuple[str, nn.Module, optim.Optimizer, torch.Tensor]:
        """The twin cost critics' pessimistic target (see class doc)."""
        if self._cfgs.alam_cfgs.cost_indicator:
            cost = (cost > 0).float()
        with torch.no_grad():
            next_action = self._f_actions(next_obs)[0]
            q_c_tp1 = self._actor_critic.target_cost_critic(next_obs, next_action)
            alam = self._cfgs.alam_cfgs
            gamma = self._cost_gamma
            target = F.cost_critic_target(
                cost,
                done,
                torch.stack(q_c_tp1),
                gamma,
                pessimism=alam.cost_target_pessimism,
                value_max=alam.cost_max / (1.0 - gamma) if alam.cost_max > 0 else math.inf,
            )
        return 'cost critic loss', self._actor_critic.cost_critic, self._actor_critic.cost_critic_optimizer, target

    def _loss_pi(self, obs: torch.Tensor) -> torch.Tensor:
        r"""SAC's policy loss plus the variant's constraint penalty (Eq. 16 for ALaM).

        .. math::

            L_\pi = \mathbb E_{\mathcal B}[\alpha' \log\pi(a|x) - \min_i Q_{\phi_i}(x,a)]
                    + s\, \mathbb E_{\mathcal B}[\mathrm{penalty}(\mathrm{sg}(\lambda(x)), g(x))]

        with :math:`s` the reward's RMS (:func:`~omnisafe_alam.core.functional.reward_rms`,
        ``alam_cfgs.penalty_scale: reward_rms``) or 1 (``none``, the paper), and
        :math:`\alpha'` the temperature (:attr:`_temperature`).
        """
        actor = self._actor_critic.actor
        measure = self._dual_cycle_due(self._policy_steps + 1)
        if self._has_density:
            action = actor.predict(obs, deterministic=False)
            log_prob = actor.log_prob(action)
            if measure and _STD_KEY in self._dual_stats:  # absent in a run resumed from before it
                self._dual_stats[_STD_KEY] = actor.std
        else:
            action, a_tau, tau = actor.sample(obs, record_step=True)
        q1, q2 = self._actor_critic.reward_critic(obs, action)
        q_term = -torch.min(q1, q2).mean() * self._value_unit
        # a diffusion actor has no density, so no entropy term (a zero on the graph, for the log)
        entropy_term = (self._temperature * log_prob).mean() if self._has_density else 0.0 * q_term

        g = self._residual(obs)
        with torch.no_grad():
            lam = self._multiplier_at(obs)
        penalty_term = self._penalty_scale * self._penalty(lam, g).mean()
        score_term = None
        if not self._has_density:
            score_term = self._score_loss(obs, lam, a_tau, tau)
        if measure:
            self._measure_actor_gradients(q_term, entropy_term, penalty_term)
        loss = entropy_term + q_term + penalty_term
        if score_term is not None:
            loss = loss + self._cfgs.model_cfgs.diffusion.score_coef * score_term
        _check_finite('policy loss', loss)
        self._logger.store(
            {
                'Metrics/MultiplierMean': lam.mean().item(),
                'Metrics/MultiplierMax': lam.max().item(),
                'Value/F_hat': (g.detach() + self._cfgs.alam_cfgs.d).mean().item(),
            },
        )
        return loss

    def _energy(self, obs: torch.Tensor, action: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
        r"""The policy loss at one action, for a diffusion actor's score target: the Eq. 16
        objective with ``F`` at that action alone,
        :math:`E(x, a) = -\min_i Q_i(x, a)\,u + s\,\mathrm{penalty}(\lambda(x), Q^c(x, a) - d)`,
        ``Q^c`` the twins combined as in ``F_hat`` (``alam_cfgs.f_hat_pessimism``), ``(B,)``."""
        alam = self._cfgs.alam_cfgs
        q1, q2 = self._actor_critic.reward_critic(obs, action)
        q_c = torch.stack(self._actor_critic.cost_critic(obs, action)).unsqueeze(1)
        g = F.f_hat(q_c, alam.f_hat_pessimism) - alam.d
        return -torch.min(q1, q2) * self._value_unit + self._penalty_scale * self._penalty(lam, g)

    def _score_loss(self, obs: torch.Tensor, lam: torch.Tensor, a_tau: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        """MSE of a diffusion actor's score head at ``(x, a_tau, tau)`` against the Monte Carlo
        score of ``exp(-E / beta)`` (:meth:`_energy`; ALGD's regulariser with the state-wise
        augmented penalty as the energy, ``model_cfgs.diffusion``)."""
        diffusion = self._cfgs.model_cfgs.diffusion
        n = diffusion.score_samples
        many = obs.repeat_interleave(n, dim=0)
        lam_many = lam.repeat_interleave(n, dim=0) if lam.dim() else lam  # ASAC's is one scalar
        actor = self._actor_critic.actor
        target = D.mc_score_around(lambda act: self._energy(many, act, lam_many), a_tau, actor.sigmas[tau], n, diffusion.beta)
        return nn.functional.mse_loss(actor.score(obs, a_tau, tau), target)

    def _update_actor(self, obs: torch.Tensor) -> None:
        """SAC's actor and alpha step; every ``m_lambda`` policy steps, a dual cycle.

        The critics' parameters are frozen during the actor step: the policy loss only needs
        gradients with respect to the actor, and skipping the (discarded) critic weight
        gradients through the K-sample ``F_hat`` saves a large part of the step's time.
        No dual cycle runs until ``epoch > algo_cfgs.warmup_epochs``, exactly as OmniSafe's
        SACLag and SACPID gate their multiplier (so 0 still skips epoch 0).
        """
        super()._update_actor(obs)
        self._policy_steps += 1
        if self._dual_cycle_due():
            self._dual_cycle(obs)
        self._logger.store({'Metrics/Rho': self._rho, **self._dual_stats})

    def _dual_cycle_due(self, policy_steps: int | None = None) -> bool:
        """Whether policy step ``policy_steps`` (default: the one just taken) ends a dual period
        (:attr:`_m_lambda`, after warm-up)."""
        steps = self._policy_steps if policy_steps is None else policy_steps
        warmed_up = self._epoch > self._cfgs.algo_cfgs.warmup_epochs
        return warmed_up and steps % self._m_lambda == 0

    @property
    def _penalty_slope_max(self) -> float:
        """Largest slope of the augmented penalty in ``g`` (``alam_cfgs.penalty_slope``)."""
        alam = self._cfgs.alam_cfgs
        return float(alam.multiplier_max) if alam.penalty_slope == 'capped' else math.inf

    @property
    def _reward_rms(self) -> float:
        """The replay batches' reward RMS :math:`s_t` (:func:`~omnisafe_alam.core.functional.reward_rms`;
        1 with ``penalty_scale: none``)."""
        alam = self._cfgs.alam_cfgs
        if alam.penalty_scale == 'none':
            return 1.0
        return F.reward_rms(self._reward_ms, self._reward_ms_steps, alam.penalty_scale_rate)

    @property
    def _normalized_reward(self) -> bool:
        """Whether the reward critics learn ``r / s_t`` (``alam_cfgs.penalty_scale: normalize``)."""
        return self._cfgs.alam_cfgs.penalty_scale == 'normalize'

    @property
    def _penalty_scale(self) -> float:
        """Weight of the constraint penalty in the policy loss (``alam_cfgs.penalty_scale``):
        ``s_t`` under ``reward_rms`` (the critics in the task's units), 1 under ``normalize``
        (the critics already in units of ``s_t``) and ``none`` (the paper)."""
        if self._cfgs.alam_cfgs.penalty_scale == 'reward_rms':
            return self._reward_rms
        return 1.0

    @property
    def _temperature(self) -> float:
        """SAC's alpha; an auto-tuned one times the penalty weight under ``penalty_scale:
        reward_rms``, so that the tuned temperature, like the multiplier, meets a reward of unit
        RMS (OmniSafe starts it at 1 whatever the reward's scale); under ``normalize`` the critics
        meet that reward themselves and alpha is used as it is. A fixed alpha is used as written
        (raw reward units, as OmniSafe's SAC, SACLag and SACPID use it, except under
        ``normalize``, where it is in units of the normalised reward)."""
        if self._cfgs.algo_cfgs.auto_alpha and self._cfgs.alam_cfgs.penalty_scale == 'reward_rms':
            return self._alpha * self._penalty_scale
        return self._alpha

    @property
    def _value_unit(self) -> float:
        """The reward critics' unit in units of ``s_t`` (the policy loss's): ``1 / (1 - gamma)``
        under ``penalty_scale: normalize`` (:func:`~omnisafe_alam.core.functional.normalized_reward`), else 1."""
        return 1.0 / (1.0 - self._cfgs.algo_cfgs.gamma) if self._normalized_reward else 1.0

    @property
    def _target_temperature(self) -> float:
        """Under ``penalty_scale: normalize`` the soft target's temperature is ``(1 - gamma) alpha``
        (the critics' unit is ``s / (1 - gamma)``)."""
        return self._temperature / self._value_unit

    def _critic_reward(self, reward: torch.Tensor) -> torch.Tensor:
        """Under ``penalty_scale: normalize``, ``(1 - gamma) r / s_t``
        (:func:`~omnisafe_alam.core.functional.normalized_reward`)."""
        if not self._normalized_reward:
            return reward
        return F.normalized_reward(reward, self._reward_rms, self._cfgs.algo_cfgs.gamma)

    def _measure_actor_gradients(self, *terms: torch.Tensor) -> None:
        """Store the norm of each policy-loss term's own gradient in the actor's parameters
        (``-Q``, ``alpha log pi``, the weighted penalty; :data:`_GRAD_KEYS`). Run at the policy
        step that ends a dual cycle only: three extra backward passes every ``m_lambda`` steps."""
        params = self._params(self._actor_critic.actor)
        for key, term in zip(_GRAD_KEYS, terms):
            grads = torch.autograd.grad(term, params, retain_graph=True, allow_unused=True)
            norm = torch.sqrt(sum((grad.pow(2).sum() for grad in grads if grad is not None), torch.zeros(())))
            self._dual_stats[key] = norm.item()

    def _update_critics(
        self,
        obs: torch.Tensor,
        action: torch.Tensor,
        reward: torch.Tensor,
        cost: torch.Tensor,
        done: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> None:
        """The reward's moving mean square (``alam_cfgs.penalty_scale``), then the critics' step
        (which under ``normalize`` reads it: the first batch is normalised by its own RMS)."""
        alam = self._cfgs.alam_cfgs
        if alam.penalty_scale != 'none':
            batch_ms = reward.pow(2).mean().item()
            self._reward_ms = F.reward_rms_ema(self._reward_ms, batch_ms, alam.penalty_scale_rate)
            self._reward_ms_steps += 1
        super()._update_critics(obs, action, reward, cost, done, next_obs)

    def _dual_cycle(self, obs: torch.Tensor) -> None:
        """Multiplier update, then the penalty schedule (Algorithm 1, lines 12-19).

        The violation metric :math:`v^k` uses the multiplier :math:`\\lambda^k` of the cycle's
        start, before the update, and the residual under the current policy (Sec. III-D).
        """
        with torch.no_grad():
            g = self._residual(obs)
            v = F.violation_metric(self._multiplier_at(obs), self._aggregate(g), self._rho)
        self._dual_stats['Loss/Loss_multiplier'] = self._update_multiplier(obs)
        with torch.no_grad():
            lam = self._multiplier_at(obs).reshape(-1)
            quantiles = torch.quantile(lam, torch.tensor(_QUANTILES, dtype=lam.dtype, device=lam.device))
        self._dual_stats['Metrics/Violation'] = v
        self._dual_stats['Metrics/FeasibleFrac'] = (g <= 0).float().mean().item()
        self._dual_stats['Metrics/PenaltyScale'] = self._reward_rms
        for name, value in zip(_QUANTILE_NAMES, quantiles.tolist()):
            self._dual_stats[f'Metrics/Multiplier{name}'] = value
        self._warn_if_infeasible(g)
        if self._uses_penalty_schedule:
            alam = self._cfgs.alam_cfgs
            self._dual.rho.fill_(F.penalty_step(self._rho, v, alam.sigma, alam.rho_max))

    def _warn_if_infeasible(self, g: torch.Tensor) -> None:
        """A warning in the log when no batch state of any dual cycle has been feasible for
        ``alam_cfgs.infeasible_warning_steps`` gradient steps (repeated each time that span
        passes again while it lasts)."""
        span = self._cfgs.alam_cfgs.infeasible_warning_steps
        if bool((g <= 0).any()):
            self._infeasible_since = None
            return
        if self._infeasible_since is None:
            self._infeasible_since = self._update_count
        lasted = self._update_count - self._infeasible_since
        if span and lasted >= span and lasted % span < self._m_lambda * self._cfgs.algo_cfgs.policy_delay:
            alam = self._cfgs.alam_cfgs
            lam = self._dual_stats
            self._logger.log(
                f'WARNING: no batch state has been feasible (F_hat <= d = {alam.d}) for {lasted} '
                f'gradient steps: F_hat batch median {float((g + alam.d).median()):.3g}, multiplier '
                f"Q10/Q50/Q90 {lam['Metrics/MultiplierQ10']:.3g}/{lam['Metrics/MultiplierQ50']:.3g}/"
                f"{lam['Metrics/MultiplierQ90']:.3g} (cap {alam.multiplier_max}), rho {self._rho:.3g}, "
                f'penalty weight {self._penalty_scale:.3g}. The policy is violating the state-wise '
                'constraint everywhere it goes; check d against the task\'s costs, or a reward so '
                'large that the penalty cannot balance it (alam_cfgs.penalty_scale: normalize)',
                'yellow',
            )

    def _aggregate(self, g: torch.Tensor) -> torch.Tensor:
        """The residual the multiplier answers to: per state here, aggregated in ASAC."""
        return g

    def _update_multiplier(self, obs: torch.Tensor) -> float:
        """``n_dual`` steps of :meth:`_multiplier_loss`; returns the last loss.

        ``frozen`` is a copy of the multiplier as it stood at the start of the cycle
        (:math:`\\lambda^k`), so every step regresses toward the same dual target. The first
        step uses the policy batch, later ones fresh replay batches.
        """
        net = self._actor_critic.multiplier
        assert net is not None and self._multiplier_optimizer is not None
        frozen = copy.deepcopy(net).requires_grad_(False)
        max_norm = self._cfgs.alam_cfgs.multiplier_max_grad_norm
        loss = torch.zeros(())
        for step in range(self._cfgs.alam_cfgs.n_dual):
            batch_obs = obs if step == 0 else self._buf.sample_batch()['obs']
            with torch.no_grad():
                g = F.dual_residual(self._residual(batch_obs), self._cfgs.alam_cfgs.dual_feasible_gain)
            loss = self._multiplier_loss(batch_obs, g, frozen)
            _check_finite('multiplier loss', loss)
            self._multiplier_optimizer.zero_grad()
            loss.backward()
            if max_norm > 0:
                clip_grad_norm_(net.parameters(), max_norm)
            self._multiplier_optimizer.step()
        return loss.item()

    def _log_when_not_update(self) -> None:
        super()._log_when_not_update()
        self._logger.store(
            {
                'Metrics/MultiplierMean': 0.0,
                'Metrics/MultiplierMax': 0.0,
                'Value/F_hat': 0.0,
                'Metrics/Rho': self._rho,
                **self._dual_stats,
            },
        )
