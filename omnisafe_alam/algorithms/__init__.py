"""The state-wise SAC family."""

from omnisafe_alam.algorithms.base import StatewiseSAC
from omnisafe_alam.algorithms.variants import ASAC, SACALaM, SACALaMGA, SACLagNet

__all__ = ['ASAC', 'SACALaM', 'SACALaMGA', 'SACLagNet', 'StatewiseSAC']
