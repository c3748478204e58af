"""`pip install` alone is enough: the wheel (and the editable install) ship the start-up hook."""

from __future__ import annotations

import importlib.util
import sysconfig
from pathlib import Path

from conftest import REPO


def test_the_editable_install_of_this_venv_carries_the_hook() -> None:
    """`make setup` runs only `pip install -e .`: the hook must have come with it."""
    pth = Path(sysconfig.get_paths()['purelib']) / 'omnisafe_alam_autoload.pth'
    assert pth.is_file()
    assert pth.read_text() == 'import omnisafe_alam_autoload; omnisafe_alam_autoload.install()\n'
    records = list(Path(sysconfig.get_paths()['purelib']).glob('omnisafe_alam-*.dist-info/RECORD'))
    assert len(records) == 1 and 'omnisafe_alam_autoload.pth,' in records[0].read_text()


def test_wheel_in_a_fresh_venv_trains_sacalam_and_uninstalls_cleanly(tmp_path: Path) -> None:
    """Build the wheel, install it alone into a fresh venv (dependencies reused from this one),
    train SACALaM through OmniSafe's own CLI, uninstall, and find the algorithm gone."""
    spec = importlib.util.spec_from_file_location('check_wheel', REPO / 'scripts' / 'check_wheel.py')
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.check(tmp_path, quick=True)
    assert result['wheel'].startswith('omnisafe_alam-')
