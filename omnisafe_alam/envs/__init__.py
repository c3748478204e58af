"""Environments shipped with the plugin (registered into OmniSafe by :func:`omnisafe_alam.register`).

All are known-answer tasks: their optimal safe return and feasible set are computed exactly by
code in their module (docs/known_answer.md).
"""

from omnisafe_alam.envs.braking import ENV_ID as BRAKING_ENV_ID
from omnisafe_alam.envs.braking import StatewiseBrakingEnv
from omnisafe_alam.envs.detour import ENV_ID as DETOUR_ENV_ID
from omnisafe_alam.envs.detour import StatewiseDetourEnv
from omnisafe_alam.envs.limit import ENV_ID as LIMIT_ENV_ID
from omnisafe_alam.envs.limit import StatewiseLimitEnv

#: every task the plugin registers in OmniSafe's environment registry
TASKS = {
    LIMIT_ENV_ID: StatewiseLimitEnv,
    BRAKING_ENV_ID: StatewiseBrakingEnv,
    DETOUR_ENV_ID: StatewiseDetourEnv,
}

__all__ = [
    'BRAKING_ENV_ID',
    'DETOUR_ENV_ID',
    'LIMIT_ENV_ID',
    'TASKS',
    'StatewiseBrakingEnv',
    'StatewiseDetourEnv',
    'StatewiseLimitEnv',
]
