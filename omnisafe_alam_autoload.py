"""Startup hook: import ``omnisafe_alam`` right after ``omnisafe`` finishes importing.

OmniSafe's CLI (``omnisafe train ...``), its spawned benchmark workers and users' scripts never
import the plugin, so its algorithms would be unknown there. ``python -m omnisafe_alam
install-hook`` writes a one-line ``omnisafe_alam_autoload.pth`` into site-packages that calls
:func:`install` at interpreter start. :func:`install` only puts a finder on ``sys.meta_path``; it
imports neither torch nor omnisafe, so interpreters that never import omnisafe pay nothing.

Set ``OMNISAFE_ALAM_AUTOLOAD=0`` to turn the hook off (then ``import omnisafe_alam`` by hand, or
use the ``omnisafe-alam`` command, which always registers).
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from importlib.abc import MetaPathFinder
from typing import Any

ENV_SWITCH = 'OMNISAFE_ALAM_AUTOLOAD'
PTH_NAME = 'omnisafe_alam_autoload.pth'
PTH_LINE = 'import omnisafe_alam_autoload; omnisafe_alam_autoload.install()\n'


class _RegisteringLoader:
    """Runs omnisafe's own loader, then imports the plugin (which registers itself)."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        try:
            importlib.import_module('omnisafe_alam')
        except Exception as error:  # noqa: BLE001 - built-in algorithms must keep working
            warnings.warn(
                f'omnisafe_alam could not register its algorithms: {error!r} '
                f'(set {ENV_SWITCH}=0 to silence this hook)',
                stacklevel=2,
            )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loader, name)


class _OmnisafeFinder(MetaPathFinder):
    """Finds ``omnisafe`` through the other finders and wraps its loader, once."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != 'omnisafe':
            return None
        uninstall()
        for finder in sys.meta_path:
            find_spec = getattr(finder, 'find_spec', None)
            spec = find_spec(fullname, path, target) if find_spec else None
            if spec is not None and spec.loader is not None:
                spec.loader = _RegisteringLoader(spec.loader)
                return spec
        return None


def enabled() -> bool:
    """False when ``OMNISAFE_ALAM_AUTOLOAD`` is 0/false/no/off."""
    return os.environ.get(ENV_SWITCH, '1').strip().lower() not in ('0', 'false', 'no', 'off')


def install() -> None:
    """Arm the hook (idempotent). If omnisafe is already imported, register right away."""
    if not enabled():
        return
    if 'omnisafe' in sys.modules:
        importlib.import_module('omnisafe_alam')
        return
    if not any(isinstance(f, _OmnisafeFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _OmnisafeFinder())


def uninstall() -> None:
    """Disarm the hook in this interpreter."""
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _OmnisafeFinder)]
