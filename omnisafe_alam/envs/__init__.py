"""Environments shipped with the plugin (registered into OmniSafe by :func:`omnisafe_alam.register`)."""

from omnisafe_alam.envs.limit import ENV_ID as LIMIT_ENV_ID
from omnisafe_alam.envs.limit import StatewiseLimitEnv

__all__ = ['LIMIT_ENV_ID', 'StatewiseLimitEnv']
