"""Ships the start-up hook ``omnisafe_alam_autoload.pth`` at the top of the wheel.

A ``.pth`` file must sit directly in site-packages to run at interpreter start; setuptools has
no declarative way to put one there, so ``build_py`` writes it next to the top-level modules.
Everything else is in pyproject.toml. ``pip uninstall omnisafe-alam`` removes the file with the
rest of the wheel (it is in the wheel's RECORD). Editable installs get the same file.
"""

from __future__ import annotations

import os

from setuptools import setup
from setuptools.command.build_py import build_py

PTH_NAME = 'omnisafe_alam_autoload.pth'
PTH_LINE = 'import omnisafe_alam_autoload; omnisafe_alam_autoload.install()\n'


class BuildPyWithHook(build_py):
    """``build_py`` plus the start-up hook at the root of the build (so of the wheel)."""

    def run(self) -> None:
        super().run()
        os.makedirs(self.build_lib, exist_ok=True)
        with open(os.path.join(self.build_lib, PTH_NAME), 'w', encoding='utf-8') as handle:
            handle.write(PTH_LINE)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        return [*super().get_outputs(include_bytecode), os.path.join(self.build_lib, PTH_NAME)]


CMDCLASS: dict[str, type] = {'build_py': BuildPyWithHook}

try:  # editable installs (PEP 660) build their own wheel; add the hook to it as well
    from setuptools.command.editable_wheel import editable_wheel

    class _StrategyWithHook:
        """Wraps setuptools' editable strategy (a context manager writing into the wheel)."""

        def __init__(self, inner: object) -> None:
            self._inner = inner

        def __enter__(self) -> '_StrategyWithHook':
            self._inner.__enter__()  # type: ignore[attr-defined]
            return self

        def __exit__(self, *exc: object) -> object:
            return self._inner.__exit__(*exc)  # type: ignore[attr-defined]

        def __call__(self, wheel: object, files: list[str], mapping: dict[str, str]) -> None:
            self._inner(wheel, files, mapping)  # type: ignore[operator]
            wheel.writestr(PTH_NAME, PTH_LINE)  # type: ignore[attr-defined]

    class EditableWheelWithHook(editable_wheel):
        """``pip install -e .`` gets the start-up hook too (setuptools' private strategy API;
        if a future setuptools changes it, run ``python -m omnisafe_alam install-hook``)."""

        def _select_strategy(self, *args: object, **kwargs: object) -> object:
            return _StrategyWithHook(super()._select_strategy(*args, **kwargs))

    if hasattr(editable_wheel, '_select_strategy'):
        CMDCLASS['editable_wheel'] = EditableWheelWithHook
except ImportError:  # pragma: no cover - setuptools without PEP 660 support
    pass

setup(cmdclass=CMDCLASS)
