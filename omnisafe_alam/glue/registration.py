"""Register the plugin's algorithms into OmniSafe 0.5.0, which has no plugin mechanism.

What OmniSafe fixes at import time, and how each is extended here (idempotently):

1. ``omnisafe.algorithms.registry``: the classes are registered unless already there.
2. ``ALGORITHMS`` / ``ALGORITHM2TYPE`` are frozen ``MappingProxyType`` objects that several
   modules import *by name* (``omnisafe``, ``omnisafe.algorithms``,
   ``omnisafe.algorithms.algo_wrapper``, ``omnisafe.common.experiment_grid``). New proxies
   with the plugin's names are built and rebound in every loaded ``omnisafe`` module that holds
   the old objects, so all copies agree and modules imported later see the new ones.
3. Default configs: ``get_default_kwargs_yaml`` (imported by name into ``algo_wrapper``) and
   ``ExperimentGrid.check_variant_vaild`` only look in ``omnisafe/configs``. Both are wrapped to
   read the plugin's YAMLs for the plugin's algorithms and defer to OmniSafe otherwise.
4. The known-answer environment ``StatewiseLimit-v0`` joins OmniSafe's environment registry.
5. ``ActorBuilder.build_actor`` knows OmniSafe's three actor types; it is wrapped to build the
   plugin's ``diffusion`` actor too, so that ``omnisafe eval`` (which rebuilds every actor from
   ``model_cfgs.actor_type``) reads ALGD's checkpoints.
6. ``custom_cfgs_to_dict`` (the ``--custom-cfgs`` / ``--log-dir`` parser) calls ``float()`` on
   any value containing a dot, so ``omnisafe train --log-dir /tmp/tmp.8JH2ICdwY1`` crashes. It
   is wrapped to keep such a value as a string. It also splits ``[64,64]`` into the strings
   ``['64', '64']``, which OmniSafe's own algorithms pass on to ``nn.Linear`` (``omnisafe train
   --algo SACLag --custom-cfgs model_cfgs:actor:hidden_sizes --custom-cfgs '[64,64]'`` ended in
   ``TypeError: empty(): argument 'size' ... must be tuple of ints``); the wrapper gives a
   list's items the scalar rules (``64`` an int, ``0.5`` a float, ``True`` a bool, else a
   string; ``[]`` the empty list). Every other value parses as OmniSafe parsed it.
"""

from __future__ import annotations

import functools
import sys
from types import MappingProxyType
from typing import Any, Callable

from omnisafe_alam.glue.defaults import CONFIG_DIR, PLUGIN_ALGORITHMS, config_path, load_defaults

__all__ = ['CONFIG_DIR', 'PLUGIN_ALGORITHMS', 'config_path', 'load_defaults', 'register']

_PATCHED = '__omnisafe_alam_patched__'


def _register_classes() -> None:
    from omnisafe.algorithms import registry

    from omnisafe_alam.core import algd, fpi, variants

    classes = {**{name: getattr(variants, name) for name in variants.__all__}, 'SACFPI': fpi.SACFPI, 'ALGD': algd.ALGD}
    for name in PLUGIN_ALGORITHMS:
        try:
            registry.get(name)
        except KeyError:
            registry.register(classes[name])


def _rebind(old: object, new: object, attr: str) -> None:
    """Point every loaded omnisafe module's ``attr`` that is ``old`` to ``new``."""
    for mod_name, module in list(sys.modules.items()):
        if (mod_name == 'omnisafe' or mod_name.startswith('omnisafe.')) and getattr(
            module,
            attr,
            None,
        ) is old:
            setattr(module, attr, new)


def _extend_algorithm_tables() -> None:
    import omnisafe.algorithms as algorithms

    old_algos, old_types = algorithms.ALGORITHMS, algorithms.ALGORITHM2TYPE
    if all(name in old_types for name in PLUGIN_ALGORITHMS):
        return
    algos = {kind: tuple(names) for kind, names in old_algos.items() if kind != 'all'}
    for name, kind in PLUGIN_ALGORITHMS.items():
        if name not in algos[kind]:
            algos[kind] = (*algos[kind], name)
    algos['all'] = tuple(name for kind, names in algos.items() for name in names)
    types = {name: kind for kind, names in algos.items() if kind != 'all' for name in names}
    new_algos, new_types = MappingProxyType(algos), MappingProxyType(types)
    _rebind(old_algos, new_algos, 'ALGORITHMS')
    _rebind(old_types, new_types, 'ALGORITHM2TYPE')
    algorithms.__all__ = algos['all']


def _wrap_once(owner: Any, attr: str, make: Callable[[Any], Any]) -> None:
    """Replace ``owner.attr`` by ``make(original)`` unless already replaced; rebind copies."""
    original = getattr(owner, attr)
    if getattr(original, _PATCHED, False):
        return
    wrapped = make(original)
    setattr(wrapped, _PATCHED, True)
    if isinstance(owner, type):
        setattr(owner, attr, wrapped)
    else:
        _rebind(original, wrapped, attr)


def _make_get_default_kwargs_yaml(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def get_default_kwargs_yaml(algo: str, env_id: str, algo_type: str) -> Any:
        if algo not in PLUGIN_ALGORITHMS:
            return original(algo, env_id, algo_type)
        print(f'Loading {algo}.yaml from {config_path(algo)}')
        return load_defaults(algo, env_id)

    return get_default_kwargs_yaml


def _make_check_variant_valid(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def check_variant_vaild(self: Any, variant: dict[str, Any]) -> None:
        if variant.get('algo') not in PLUGIN_ALGORITHMS:
            return original(self, variant)
        from omnisafe.utils.tools import recursive_check_config

        default_config = load_defaults(variant['algo'])
        recursive_check_config(variant, default_config, exclude_keys=('algo', 'env_id'))
        return None

    return check_variant_vaild


def _make_custom_cfgs_to_dict(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def custom_cfgs_to_dict(key_list: str, value: Any) -> dict[str, Any]:
        if isinstance(value, str) and value.startswith('[') and value.endswith(']'):
            items = [item.strip() for item in value[1:-1].split(',')]
            parsed = [_cli_scalar(item) for item in items if item]
            return _set_leaf(original(key_list, '_'), parsed)
        try:
            return original(key_list, value)
        except ValueError:
            # OmniSafe's float() on a dotted non-number (a path, a version): keep the string.
            return _set_leaf(original(key_list, '_'), str(value))

    return custom_cfgs_to_dict


def _cli_scalar(text: str) -> Any:
    """One ``--custom-cfgs`` value by OmniSafe's scalar rules, a dotted non-number kept a string."""
    if text in ('True', 'False'):
        return text == 'True'
    if '.' in text:
        try:
            return float(text)
        except ValueError:
            return text
    return int(text) if text.isdigit() else text


def _make_build_actor(original: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(original)
    def build_actor(self: Any, actor_type: str) -> Any:
        if actor_type != 'diffusion':
            return original(self, actor_type)
        from omnisafe_alam.core.diffusion_actor import DiffusionActor

        # the reference's schedule; a checkpoint's own (its saved sigmas) replaces it on loading
        return DiffusionActor(
            self._obs_space,  # noqa: SLF001
            self._act_space,  # noqa: SLF001
            self._hidden_sizes,  # noqa: SLF001
            activation=self._activation,  # noqa: SLF001
            weight_initialization_mode=self._weight_initialization_mode,  # noqa: SLF001
        )

    return build_actor


def _set_leaf(nested: dict[str, Any], value: Any) -> dict[str, Any]:
    node = nested
    while True:
        (key, child), = node.items()
        if not isinstance(child, dict):
            node[key] = value
            return nested
        node = child


def _patch_config_lookup() -> None:
    import omnisafe.utils.config as config
    import omnisafe.utils.tools as tools
    from omnisafe.common.experiment_grid import ExperimentGrid

    _wrap_once(config, 'get_default_kwargs_yaml', _make_get_default_kwargs_yaml)
    _wrap_once(ExperimentGrid, 'check_variant_vaild', _make_check_variant_valid)
    _wrap_once(tools, 'custom_cfgs_to_dict', _make_custom_cfgs_to_dict)
    from omnisafe.models.actor.actor_builder import ActorBuilder

    _wrap_once(ActorBuilder, 'build_actor', _make_build_actor)


def _register_envs() -> None:
    from omnisafe.envs.core import env_register, support_envs

    from omnisafe_alam.envs import TASKS

    for env_id, env_class in TASKS.items():
        if env_id not in support_envs():
            env_register(env_class)


def register() -> None:
    """Make the plugin's algorithms and environments first-class in OmniSafe. Idempotent."""
    _register_classes()
    _register_envs()
    _extend_algorithm_tables()
    _patch_config_lookup()
