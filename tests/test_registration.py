"""Registration into OmniSafe: every copy of the tables agrees, idempotent, built-ins untouched."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import BIN, run_cli

PLUGIN = ['SACALaM', 'SACALaMGA', 'SACLagNet', 'ASAC', 'SACFPI', 'ALGD']
LIST_ALGOS = (
    "import json, sys, omnisafe; "
    "print(json.dumps({'all': list(omnisafe.ALGORITHMS['all']), "
    "'off': list(omnisafe.ALGORITHMS['off-policy']), "
    "'plugin_loaded': 'omnisafe_alam' in sys.modules}))"
)


def _algos(tmp_path: Path, **env: str) -> dict:
    out = run_cli([sys.executable, '-c', LIST_ALGOS], cwd=tmp_path, **env)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_hook_registers_on_plain_import_and_leaves_builtins(tmp_path: Path) -> None:
    on = _algos(tmp_path)
    off = _algos(tmp_path, OMNISAFE_ALAM_AUTOLOAD='0')
    assert on['plugin_loaded'] and not off['plugin_loaded']
    assert [a for a in on['all'] if a not in PLUGIN] == off['all']  # built-ins unchanged, in order
    assert sorted(set(on['all']) - set(off['all'])) == sorted(PLUGIN)
    assert on['off'] == off['off'] + PLUGIN
    assert 'SACLag' in on['all'] and 'PPOLag' in on['all']


def test_every_copy_of_the_tables_agrees_and_register_is_idempotent() -> None:
    import omnisafe
    from omnisafe.algorithms import algo_wrapper, registry
    from omnisafe.common import experiment_grid

    import omnisafe_alam

    omnisafe_alam.register()
    omnisafe_alam.register()
    import omnisafe.algorithms as algorithms

    assert algo_wrapper.ALGORITHMS is algorithms.ALGORITHMS is omnisafe.ALGORITHMS
    assert experiment_grid.ALGORITHM2TYPE is algo_wrapper.ALGORITHM2TYPE
    assert len(set(omnisafe.ALGORITHMS['all'])) == len(omnisafe.ALGORITHMS['all'])
    for name in PLUGIN:
        assert algorithms.ALGORITHM2TYPE[name] == 'off-policy'
        assert registry.get(name).__name__ == name
    with pytest.raises(TypeError):  # still read-only, as OmniSafe intends
        omnisafe.ALGORITHMS['all'] = ()  # type: ignore[index]


def test_importing_the_plugin_first_or_twice_is_safe(tmp_path: Path) -> None:
    code = (
        'import importlib, omnisafe_alam, omnisafe; importlib.reload(omnisafe_alam); '
        "import omnisafe; print(omnisafe.ALGORITHMS['all'].count('SACALaM'))"
    )
    out = run_cli([sys.executable, '-c', code], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == '1'


def test_builtin_configs_still_load_from_omnisafe() -> None:
    from omnisafe.utils import config

    import omnisafe_alam  # noqa: F401

    cfgs = config.get_default_kwargs_yaml('SACLag', 'SafetyPointGoal1-v0', 'off-policy')
    assert 'lagrange_cfgs' in cfgs and 'alam_cfgs' not in cfgs
    ours = config.get_default_kwargs_yaml('SACALaM', 'SafetyPointGoal1-v0', 'off-policy')
    assert ours.alam_cfgs.K == 5


@pytest.mark.parametrize(
    ('value', 'expected'),
    [
        ('True', True),
        ('3', 3),
        ('0.5', 0.5),
        ('[1,2]', [1, 2]),  # OmniSafe: ['1', '2'], which its own networks cannot take
        ('[64, 64]', [64, 64]),
        ('[]', []),
        ('[0.5,True,abc]', [0.5, True, 'abc']),
        ('abc', 'abc'),
        ('1e-3', '1e-3'),  # OmniSafe leaves it a string; the plugin coerces its own keys
        ('/tmp/tmp.8JH2ICdwY1/train', '/tmp/tmp.8JH2ICdwY1/train'),  # used to raise
    ],
)
def test_cli_value_parser_fixed_only_where_omnisafe_crashed(value: str, expected: object) -> None:
    from omnisafe.utils import tools

    import omnisafe_alam  # noqa: F401

    assert tools.custom_cfgs_to_dict('a:b', value) == {'a': {'b': expected}}


def test_hook_off_means_unknown_algorithm(tmp_path: Path) -> None:
    out = run_cli(
        [str(BIN / 'omnisafe'), 'train', '--algo', 'SACALaM', '--env-id', 'SafetyPointGoal1-v0'],
        cwd=tmp_path,
        timeout=120,
        OMNISAFE_ALAM_AUTOLOAD='0',
    )
    assert out.returncode != 0
    assert "SACALaM doesn't exist" in out.stdout + out.stderr


def test_omnisafe_alam_command_wraps_omnisafe_cli(tmp_path: Path) -> None:
    out = run_cli([sys.executable, '-m', 'omnisafe_alam', '--help'], cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr
    for command in ('train', 'benchmark', 'eval', 'analyze-grid', 'install-hook'):
        assert command in out.stdout
    assert subprocess.run([str(BIN / 'omnisafe-alam'), '--help'], capture_output=True, check=False).returncode == 0
