"""SAC-FPI: feasible policy iteration on SAC, the ALaM paper's region-wise baseline.

Its feasibility function is not a cost value and it has no multiplier, so it shares only
:class:`StatewiseOffPolicy` (adapter, checks, calibration, final checkpoint) with the Lagrangian
family; the math is in :mod:`omnisafe_alam.core.functional` (``fpi_*``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnisafe_alam.core import functional as F
from omnisafe_alam.core.models import FeasibilityActorQCritic
from omnisafe_alam.core.training import StatewiseOffPolicy, _check_finite

__all__ = ['SACFPI']


class SACFPI(StatewiseOffPolicy):
    r"""SAC-FPI (Yang et al., Feasible Policy Iteration, arXiv 2304.08845).

    Each gradient step, on one replay batch (reference implementation ``fpi_lin``):

    1. reward critics: SAC's (OmniSafe);
    2. twin CDF critics ``G`` toward :func:`~omnisafe_alam.core.functional.fpi_cdf_target`
       (``c = 1[cost > 0]``, pessimistic max over the target twins, clipped to [0, 1]);
    3. actor: the region-wise loss :func:`~omnisafe_alam.core.functional.fpi_policy_loss` at one
       reparameterised action per state, with ``Q`` the min of the reward twins and ``G`` the
       max of the CDF twins, then SAC's temperature step;
    4. Polyak averaging of all targets at ``algo_cfgs.polyak``.

    Region identification is per sample: a state is feasible when ``G(x, a) < p_f``
    (``fpi_cfgs.p_f``). Logged beside SAC's keys: ``Metrics/FeasibleFrac`` (share of the batch
    in the feasible region), ``Metrics/BarrierWeight`` (mean ``b/(1+b)`` there), ``Value/G_hat``
    (batch mean of ``G``), ``Metrics/EpUnsafeSteps``, OmniSafe's ``Loss/Loss_cost_critic`` and
    ``Value/cost_critic`` (here: of the CDF critics, which fill OmniSafe's cost-critic slot) and the
    ``Calibration/*`` keys, which here compare ``G`` at start states with the realised
    ``gamma^T`` of each episode's first violation.

    References:
        - Yang, Zheng, Li, Xu, Liu, Zhan, Zhang. Feasible Policy Iteration for Safe
          Reinforcement Learning, arXiv 2304.08845.
    """

    _actor_critic: FeasibilityActorQCritic

    # ------------------------------------------------------------------ set-up
    def _init_model(self) -> None:
        self._cfgs.model_cfgs.critic['num_critics'] = 2
        self._actor_critic = FeasibilityActorQCritic(
            obs_space=self._env.observation_space,
            act_space=self._env.action_space,
            model_cfgs=self._cfgs.model_cfgs,
            epochs=self._epochs,
        ).to(self._device)

    def _risk_settings(self) -> dict[str, Any]:
        return {
            'risk_fn': self._g_hat_no_grad,
            'kind': 'first_cost_decay',
            'indicator': True,
            'window': self._cfgs.fpi_cfgs.calibration_window,
        }

    def _checkpoint_items(self) -> dict[str, Any]:
        return self._actor_critic.checkpoint_items()

    def _critics(self) -> tuple[nn.Module, ...]:
        return (self._actor_critic.reward_critic, self._actor_critic.feasibility_critic)

    def _init_log(self) -> None:
        super()._init_log()
        for key in ('Metrics/FeasibleFrac', 'Metrics/BarrierWeight', 'Value/G_hat'):
            self._logger.register_key(key)

    # ------------------------------------------------------------ estimates
    def _g(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Pessimistic CDF ``max_i G_i(x, a)``, shape ``(B,)``."""
        return torch.stack(self._actor_critic.feasibility_critic(obs, action)).max(dim=0).values

    def _g_hat_no_grad(self, obs: torch.Tensor) -> torch.Tensor:
        """``G`` at observations under one policy sample (the adapter's risk estimate)."""
        with torch.no_grad():
            return self._g(obs, self._actor_critic.actor.predict(obs, deterministic=False))

    # ------------------------------------------------------------ updates
    def _cost_critic_target(
        self,
        cost: torch.Tensor,
        done: torch.Tensor,
        next_obs: torch.Tensor,
    ) -> tuple[str, nn.Module, torch.optim.Optimizer, torch.Tensor]:
        """FPI's risky Bellman target for the twin CDF critics (OmniSafe's cost-critic slot)."""
        with torch.no_grad():
            next_action = self._actor_critic.actor.predict(next_obs, deterministic=False)
            g_next = torch.stack(self._actor_critic.target_feasibility_critic(next_obs, next_action))
            target = F.fpi_cdf_target(cost, done, g_next, self._cfgs.algo_cfgs.gamma)
        return (
            'feasibility critic loss',
            self._actor_critic.feasibility_critic,
            self._actor_critic.feasibility_critic_optimizer,
            target,
        )

    def _loss_pi(self, obs: torch.Tensor) -> torch.Tensor:
        """FPI's region-wise policy loss (see :func:`~omnisafe_alam.core.functional.fpi_policy_loss`)."""
        fpi = self._cfgs.fpi_cfgs
        action = self._actor_critic.actor.predict(obs, deterministic=False)
        log_prob = self._actor_critic.actor.log_prob(action)
        q1, q2 = self._actor_critic.reward_critic(obs, action)
        g = self._g(obs, action)
        loss, stats = F.fpi_policy_loss(torch.min(q1, q2), g, log_prob, self._alpha, fpi.p_f, fpi.barrier_t)
        _check_finite('policy loss', loss)
        self._logger.store(
            {
                'Metrics/FeasibleFrac': stats['feasible'].float().mean().item(),
                'Metrics/BarrierWeight': stats['barrier'].item(),
                'Value/G_hat': g.mean().item(),
            },
        )
        return loss

    def _log_when_not_update(self) -> None:
        super()._log_when_not_update()
        self._logger.store(
            {
                'Metrics/FeasibleFrac': 0.0,
                'Metrics/BarrierWeight': 0.0,
                'Value/G_hat': 0.0,
            },
        )
