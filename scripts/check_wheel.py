"""Build the wheel, install it into a fresh Python 3.10 venv, and check that plain OmniSafe knows
the plugin's algorithms with no further command; then uninstall and check the hook is gone.

    python scripts/check_wheel.py            # dependencies installed from the package index
    python scripts/check_wheel.py --quick    # dependencies reused from this interpreter's env

``--quick`` (what ``tests/test_wheel.py`` runs) puts this environment's site-packages on the
fresh venv's path with a plain path line instead of installing torch & co again: only the wheel
itself is installed by pip. The full check (``make check-wheel``) downloads or reuses pip's cache
for every dependency: minutes, so it is not part of ``make test``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PTH_NAME = 'omnisafe_alam_autoload.pth'
TRAIN_ARGS = [
    'train', '--algo', 'SACALaM', '--env-id', 'StatewiseLimit-v0', '--total-steps', '400',
    '--torch-threads', '1',
    '--custom-cfgs', 'algo_cfgs:steps_per_epoch', '--custom-cfgs', '200',
    '--custom-cfgs', 'algo_cfgs:start_learning_steps', '--custom-cfgs', '100',
    '--custom-cfgs', 'model_cfgs:actor:hidden_sizes', '--custom-cfgs', '[16,16]',
    '--custom-cfgs', 'model_cfgs:critic:hidden_sizes', '--custom-cfgs', '[16,16]',
    '--custom-cfgs', 'logger_cfgs:use_tensorboard', '--custom-cfgs', 'False',
]
PROBE = "from omnisafe.algorithms import ALGORITHMS; print('SACALaM' in ALGORITHMS['all'])"


def _run(args: list[str], **kwargs: object) -> subprocess.CompletedProcess:
    result = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise RuntimeError(f'{" ".join(map(str, args))} failed ({result.returncode}):\n{result.stderr[-4000:]}')
    return result


def check(workdir: Path, quick: bool) -> dict[str, object]:
    """Run the whole check in ``workdir``; returns what was measured (raises on any failure)."""
    timings: dict[str, object] = {}
    start = time.time()
    _run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-q', '-w', str(workdir / 'dist'), str(REPO)])
    (wheel,) = (workdir / 'dist').glob('omnisafe_alam-*.whl')
    timings['wheel'] = wheel.name
    venv = workdir / 'venv'
    _run([sys.executable, '-m', 'venv', str(venv)])
    python = venv / 'bin' / 'python'
    purelib = Path(_run([str(python), '-c', "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    install = [str(python), '-m', 'pip', 'install', '-q', str(wheel)]
    if quick:
        # a plain path line: the directory joins sys.path, its own .pth files are NOT run
        (purelib / 'zz_reused_dependencies.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
        install.insert(5, '--no-deps')
    _run(install)
    timings['install_s'] = round(time.time() - start, 1)
    if not (purelib / PTH_NAME).is_file():
        raise RuntimeError(f'the wheel did not install {PTH_NAME} into {purelib}')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH', 'OMNISAFE_ALAM_AUTOLOAD')}
    omnisafe = [str(venv / 'bin' / 'omnisafe')] if not quick else [str(python), '-c', 'from omnisafe.utils.command_app import app; app()']
    start = time.time()
    trained = _run([*omnisafe, *TRAIN_ARGS, '--log-dir', str(workdir / 'runs')], cwd=workdir, env=env)
    timings['train_s'] = round(time.time() - start, 1)
    progress = list((workdir / 'runs').glob('train/SACALaM-*/seed-*/progress.csv'))
    if len(progress) != 1 or len(progress[0].read_text().splitlines()) != 3:
        raise RuntimeError(f'training wrote no 2-epoch progress.csv:\n{trained.stdout[-2000:]}')
    if _run([str(python), '-c', PROBE], cwd=workdir, env=env).stdout.strip().splitlines()[-1] != 'True':
        raise RuntimeError('SACALaM unknown after installing the wheel')
    _run([str(python), '-m', 'pip', 'uninstall', '-y', '-q', 'omnisafe-alam'])
    if (purelib / PTH_NAME).exists():
        raise RuntimeError(f'{PTH_NAME} left behind by pip uninstall')
    if _run([str(python), '-c', PROBE], cwd=workdir, env=env).stdout.strip().splitlines()[-1] != 'False':
        raise RuntimeError('SACALaM still known after uninstalling')
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--quick', action='store_true', help="reuse this environment's dependencies")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix='omnisafe-alam-wheel-') as tmp:
        result = check(Path(tmp), args.quick)
    print(f'wheel check passed ({"quick" if args.quick else "full"}): {result}')


if __name__ == '__main__':
    main()
