"""The four registered algorithms. Each differs from :class:`StatewiseSAC` in one or two hooks.

+--------------+---------------------------------+-------------------------------+-------------+
| algorithm    | policy penalty                  | multiplier update             | rho schedule|
+==============+=================================+===============================+=============+
| SACALaM      | augmented (Eq. 16), state-wise  | regression to dual target (9) | yes         |
+--------------+---------------------------------+-------------------------------+-------------+
| SACALaMGA    | augmented (Eq. 16), state-wise  | gradient ascent (Eq. 3)       | yes         |
+--------------+---------------------------------+-------------------------------+-------------+
| SACLagNet    | Lagrangian (Eq. 3), state-wise  | gradient ascent (Eq. 3)       | no          |
+--------------+---------------------------------+-------------------------------+-------------+
| ASAC         | augmented, one scalar, E_B[g]   | closed form max(lam+rho*G, 0) | yes         |
+--------------+---------------------------------+-------------------------------+-------------+
"""

from __future__ import annotations

import torch
from torch import nn

from omnisafe_alam.core import functional as F
from omnisafe_alam.core.lagrangian import StatewiseSAC

__all__ = ['ASAC', 'SACALaM', 'SACALaMGA', 'SACLagNet']


class SACALaM(StatewiseSAC):
    """SAC-ALaM (the paper's method, Algorithm 1).

    References:
        - Zhang et al., Augmented Lagrangian Multiplier Network for State-wise Safety in
          Reinforcement Learning, arXiv 2605.00667.
    """

    def _penalty(self, lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.augmented_penalty(lam, g, self._rho, self._penalty_slope_max)

    def _multiplier_loss(self, obs: torch.Tensor, g: torch.Tensor, frozen: nn.Module) -> torch.Tensor:
        with torch.no_grad():
            target = F.dual_target(frozen(obs), g, self._rho, self._cfgs.alam_cfgs.multiplier_max)
        return F.multiplier_regression_loss(self._multiplier_uncapped(obs), target)


class SACALaMGA(SACALaM):
    """Ablation of SAC-ALaM (Fig. 5): the multiplier is trained by plain dual gradient ascent."""

    def _multiplier_loss(self, obs: torch.Tensor, g: torch.Tensor, frozen: nn.Module) -> torch.Tensor:
        return F.multiplier_ascent_loss(self._multiplier_uncapped(obs), g, self._cfgs.alam_cfgs.multiplier_max)


class SACLagNet(StatewiseSAC):
    """SAC-LagNet: the state-wise Lagrangian of FAC (Ma et al. 2021, arXiv 2105.10682), Eq. 3.

    No quadratic term, so ``rho`` stays at ``rho_init`` and is not used.
    """

    _uses_penalty_schedule = False

    def _penalty(self, lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.lagrangian_penalty(lam, g)

    def _multiplier_loss(self, obs: torch.Tensor, g: torch.Tensor, frozen: nn.Module) -> torch.Tensor:
        return F.multiplier_ascent_loss(self._multiplier_uncapped(obs), g, self._cfgs.alam_cfgs.multiplier_max)


class ASAC(StatewiseSAC):
    """ASAC: APPO's augmented Lagrangian (Dai et al., AAAI 2023) on SAC, one scalar multiplier.

    The constraint is aggregated over the batch, ``G = E_B[F_hat(x)] - d``; the multiplier is
    updated in closed form every ``m_lambda`` policy steps, from ``G`` estimated on ``n_dual``
    replay batches.
    """

    _statewise = False

    def _multiplier_at(self, obs: torch.Tensor) -> torch.Tensor:
        return self._dual.lam.expand(())

    def _aggregate(self, g: torch.Tensor) -> torch.Tensor:
        return g.mean()

    def _penalty(self, lam: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        return F.augmented_penalty(lam, self._aggregate(g), self._rho, self._penalty_slope_max)

    def _update_multiplier(self, obs: torch.Tensor) -> float:
        with torch.no_grad():
            batches = [obs] + [
                self._buf.sample_batch()['obs'] for _ in range(self._cfgs.alam_cfgs.n_dual - 1)
            ]
            g_agg = torch.cat([self._residual(b) for b in batches]).mean().item()
        lam = F.scalar_dual_step(float(self._dual.lam), g_agg, self._rho)
        self._dual.lam.fill_(min(lam, self._cfgs.alam_cfgs.multiplier_max))
        return 0.0

    def _init_log(self) -> None:
        super()._init_log()
        self._logger.register_key('Metrics/LagrangeMultiplier')

    def _update_actor(self, obs: torch.Tensor) -> None:
        super()._update_actor(obs)
        self._logger.store({'Metrics/LagrangeMultiplier': float(self._dual.lam)})

    def _log_when_not_update(self) -> None:
        super()._log_when_not_update()
        self._logger.store({'Metrics/LagrangeMultiplier': float(self._dual.lam)})
