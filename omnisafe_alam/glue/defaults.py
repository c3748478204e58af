"""The plugin's algorithm names and their default YAMLs (``omnisafe_alam/configs``).

A leaf: the algorithms (to validate a run's config) and the registration (to answer OmniSafe's
config look-ups) both read the defaults here, so neither imports the other for them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ['CONFIG_DIR', 'PLUGIN_ALGORITHMS', 'SETTINGS_GROUP', 'config_path', 'load_defaults']

#: name -> OmniSafe algorithm type
PLUGIN_ALGORITHMS: dict[str, str] = {
    'SACALaM': 'off-policy',
    'SACALaMGA': 'off-policy',
    'SACLagNet': 'off-policy',
    'ASAC': 'off-policy',
    'SACFPI': 'off-policy',
    'ALGD': 'off-policy',
}

#: the key group that holds each plugin algorithm's own settings
SETTINGS_GROUP: dict[str, str] = {name: 'alam_cfgs' for name in PLUGIN_ALGORITHMS} | {
    'SACFPI': 'fpi_cfgs',
    'ALGD': 'algd_cfgs',
}

CONFIG_DIR = Path(__file__).resolve().parent.parent / 'configs'


def config_path(algo: str) -> Path:
    """Path of the default YAML of a plugin algorithm."""
    return CONFIG_DIR / PLUGIN_ALGORITHMS[algo] / f'{algo}.yaml'


def load_defaults(algo: str, env_id: str | None = None) -> dict[str, Any]:
    """The plugin algorithm's ``defaults`` block, updated by its ``env_id`` section if any."""
    from omnisafe.utils.config import Config
    from omnisafe.utils.tools import load_yaml

    kwargs = load_yaml(str(config_path(algo)))
    defaults = Config.dict2config(kwargs['defaults'])
    if env_id is not None and kwargs.get(env_id) is not None:
        defaults.recurisve_update(kwargs[env_id])
    return defaults
