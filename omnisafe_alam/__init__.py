"""omnisafe-alam: state-wise safe off-policy algorithms for OmniSafe.

Importing this package registers ``SACALaM``, ``SACALaMGA``, ``SACLagNet``, ``ASAC``, ``SACFPI`` and ``ALGD`` with
OmniSafe (idempotently), so ``omnisafe.Agent('SACALaM', env_id)`` works.

Three rooms (and the known-answer tasks in ``envs``, the YAML defaults in ``configs``):

- ``core``: the algorithm core: the paper's math (``functional``), the networks (``models``), the
  shared training machinery (``training``), the state-wise Lagrangian family (``lagrangian``),
  its four variants (``variants``), SAC-FPI (``fpi``) and ALGD (``algd``, with ``diffusion`` and
  ``diffusion_actor``);
- ``glue``: what connects it to OmniSafe: default configs (``defaults``), their checks
  (``config``), the off-policy adapter, full checkpoints, registration; the start-up hook is the
  top-level module ``omnisafe_alam_autoload``;
- ``tools``: what is run around training: run loading (``runs``), comparison, risk maps,
  known-answer scoring, grids and the benchmark; ``cli`` puts them behind ``omnisafe-alam``.
"""

from omnisafe_alam.glue.registration import PLUGIN_ALGORITHMS, register

register()

from omnisafe_alam.core.algd import ALGD  # noqa: E402
from omnisafe_alam.core.fpi import SACFPI  # noqa: E402
from omnisafe_alam.core.lagrangian import StatewiseSAC  # noqa: E402
from omnisafe_alam.core.variants import ASAC, SACALaM, SACALaMGA, SACLagNet  # noqa: E402

__version__ = '0.1.0'
__all__ = ['ALGD', 'ASAC', 'PLUGIN_ALGORITHMS', 'SACALaM', 'SACALaMGA', 'SACFPI', 'SACLagNet', 'StatewiseSAC', 'register']
