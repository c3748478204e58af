"""omnisafe-alam: state-wise safe off-policy algorithms for OmniSafe.

Importing this package registers ``SACALaM``, ``SACALaMGA``, ``SACLagNet``, ``ASAC`` and ``SACFPI`` with
OmniSafe (idempotently), so ``omnisafe.Agent('SACALaM', env_id)`` works.
"""

from omnisafe_alam.registration import PLUGIN_ALGORITHMS, register

register()

from omnisafe_alam.algorithms import ASAC, SACALaM, SACALaMGA, SACFPI, SACLagNet, StatewiseSAC  # noqa: E402

__version__ = '0.1.0'
__all__ = ['ASAC', 'PLUGIN_ALGORITHMS', 'SACALaM', 'SACALaMGA', 'SACFPI', 'SACLagNet', 'StatewiseSAC', 'register']
