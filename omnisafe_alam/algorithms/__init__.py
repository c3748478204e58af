"""The plugin's algorithms: the state-wise SAC family and SAC-FPI."""

from omnisafe_alam.algorithms.base import StatewiseOffPolicy, StatewiseSAC
from omnisafe_alam.algorithms.fpi import SACFPI
from omnisafe_alam.algorithms.variants import ASAC, SACALaM, SACALaMGA, SACLagNet

__all__ = ['ASAC', 'SACALaM', 'SACALaMGA', 'SACFPI', 'SACLagNet', 'StatewiseOffPolicy', 'StatewiseSAC']
