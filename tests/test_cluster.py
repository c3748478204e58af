"""`omnisafe-alam grid --ray`: a grid on a real Ray instance (a local head on 127.0.0.1, 2 CPUs,
started here), against the local backend, through a killed task and a stopped driver."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pandas as pd
import pytest

from conftest import BIN, resumable_grid_text, run_cli
from omnisafe_alam.tools.grid import RunLock, expand_grid, load_grid, lock_holder, run_state

TASK = 'StatewiseLimit-v0'
ray = pytest.importorskip('ray', reason="the Ray backend's tests need the extra: pip install -e '.[ray]'")


def _grid(path: Path, algos: str, seeds: str, steps: int, threads: int = 1) -> Path:
    path.write_text(resumable_grid_text(algos, steps, seeds, threads, TASK), encoding='utf-8')
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


@pytest.fixture(scope='module')
def cluster(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Ray head on this machine (``ray start --head --block``: stopping the command stops
    every process it started, and no other Ray instance of the machine is touched)."""
    port = _free_port()
    temp = Path('/tmp') / f'ray-test-{os.getpid()}'  # Ray's socket paths must stay short
    log = (tmp_path_factory.mktemp('ray') / 'head.log').open('wb')
    head = subprocess.Popen(  # noqa: S603
        [str(BIN / 'ray'), 'start', '--head', '--block', '--port', str(port), '--num-cpus', '2', '--num-gpus', '0',
         '--node-ip-address', '127.0.0.1', '--include-dashboard', 'false', '--disable-usage-stats',
         '--temp-dir', str(temp)],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, 'RAY_USAGE_STATS_ENABLED': '0'},
    )
    address = f'127.0.0.1:{port}'
    deadline = time.time() + 90
    while time.time() < deadline:
        probe = subprocess.run([str(BIN / 'ray'), 'status', '--address', address], capture_output=True, text=True)  # noqa: S603
        if probe.returncode == 0 and 'CPU' in probe.stdout:
            break
        assert head.poll() is None, 'ray start --head exited'
        time.sleep(1.0)
    else:
        pytest.fail(f'the Ray head at {address} did not come up in 90 s')
    yield address
    os.killpg(head.pid, signal.SIGTERM)
    try:
        head.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)  # what the head's own shutdown left
    head.wait()
    log.close()


def _grid_cmd(grid: Path, log_dir: Path, address: str) -> list[str]:
    return [str(BIN / 'omnisafe-alam'), 'grid', str(grid), '--log-dir', str(log_dir), '--ray', '--address', address]


def _progress(log_dir: Path, name: str) -> pd.DataFrame:
    (path,) = (log_dir / name).glob('*/seed-*/progress.csv')
    return pd.read_csv(path)


METRICS = ['TotalEnvSteps', 'Metrics/EpRet', 'Metrics/EpCost', 'Metrics/EpLen']


def test_a_grid_on_ray_matches_the_local_grid_and_a_rerun_skips_it(cluster: str, tmp_path: Path) -> None:
    """2 algorithms x 2 seeds: the same run directories, and (one torch thread, same seeds) the
    same learning curves, as the local backend; the same command again submits nothing."""
    grid = _grid(tmp_path / 'grid.yaml', 'SACALaM, SACLag', '0, 1', 400)
    on_ray, local = tmp_path / 'ray', tmp_path / 'local'
    out = run_cli(_grid_cmd(grid, on_ray, cluster), cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert 'grid: 4 done, 0 running, 0 queued, 0 failed' in out.stdout
    out = run_cli([str(BIN / 'omnisafe-alam'), 'grid', str(grid), '--log-dir', str(local), '--jobs', '2'], cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:]

    def layout(root: Path) -> list[str]:
        return sorted(str(p.parent.relative_to(root)).rsplit('/', 1)[0] for p in root.glob('*/seed-*/*/seed-*/progress.csv'))

    assert layout(on_ray) == layout(local) == sorted(r.name + '/' + r.algo + '-{' + TASK + '}' for r in expand_grid(load_grid(grid)))
    for run in expand_grid(load_grid(grid)):
        a, b = _progress(on_ray, run.name), _progress(local, run.name)
        assert a['TotalEnvSteps'].tolist() == [200, 400], run.name
        pd.testing.assert_frame_equal(a[METRICS], b[METRICS], obj=run.name)
    assert not list((on_ray / '.grid-locks').glob('*.lock'))  # every lock released

    again = run_cli(_grid_cmd(grid, on_ray, cluster), cwd=tmp_path)
    assert again.returncode == 0
    assert again.stdout.count('done ') == 4 and 'nothing to do' in again.stdout, again.stdout


def test_a_killed_task_is_retried_from_its_checkpoint(cluster: str, tmp_path: Path) -> None:
    """SIGKILL to the Ray worker running a run: Ray retries the task, which resumes the run from
    its newest full checkpoint; progress.csv has every epoch once."""
    grid = _grid(tmp_path / 'grid.yaml', 'SACALaM', '0', 1400)
    log_dir = tmp_path / 'runs'
    proc = subprocess.Popen(_grid_cmd(grid, log_dir, cluster), cwd=tmp_path, stdout=subprocess.PIPE,  # noqa: S603
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    (run,) = expand_grid(load_grid(grid))
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = list((log_dir / run.name).glob('*/seed-*/progress.csv'))
        if rows and len(rows[0].read_text().splitlines()) >= 3:
            break
        time.sleep(0.2)
    (lock,) = (log_dir / '.grid-locks').glob('*.lock')
    holder = json.loads(lock.read_text())
    os.kill(holder['pid'], signal.SIGKILL)  # the task's own process, not the trainer
    output = proc.communicate(timeout=180)[0]
    assert proc.returncode == 0, output[-3000:]
    assert 'finished SACALaM' in output, output[-3000:]
    progress = _progress(log_dir, run.name)
    assert progress['TotalEnvSteps'].tolist() == [200, 400, 600, 800, 1000, 1200, 1400]
    log = (log_dir / run.name / 'grid.log').read_text()
    assert log.count(' new on ') == 1 and log.count(' resume on ') == 1, log[-2000:]
    assert run_state(run, log_dir)[0] == 'done'


def test_sigterm_on_the_driver_leaves_resumable_checkpoints(cluster: str, tmp_path: Path) -> None:
    """SIGTERM to the driver: every running run saves a full checkpoint and stops; no lock is
    left; the runs are resumable; the exit status says runs are unfinished."""
    grid = _grid(tmp_path / 'grid.yaml', 'SACALaM', '0, 1', 4000)
    log_dir = tmp_path / 'runs'
    proc = subprocess.Popen(_grid_cmd(grid, log_dir, cluster), cwd=tmp_path, stdout=subprocess.PIPE,  # noqa: S603
                            stderr=subprocess.STDOUT, text=True, env={**os.environ, 'PYTHONUNBUFFERED': '1'})
    runs = expand_grid(load_grid(grid))
    deadline = time.time() + 120
    while time.time() < deadline:
        rows = [list((log_dir / r.name).glob('*/seed-*/progress.csv')) for r in runs]
        if all(r and len(r[0].read_text().splitlines()) >= 3 for r in rows):
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=120)[0]
    assert proc.returncode == 1, output[-3000:]
    assert output.count('stopped  SACALaM') == 2 and 'run the same command again' in output, output[-3000:]
    for run in runs:
        assert run_state(run, log_dir)[0] == 'resume', run.name
        assert _progress(log_dir, run.name)['TotalEnvSteps'].iloc[-1] < 4000
    assert not list((log_dir / '.grid-locks').glob('*.lock'))


def test_a_run_no_node_can_hold_and_an_unreachable_cluster_are_refused(cluster: str, tmp_path: Path) -> None:
    grid = _grid(tmp_path / 'grid.yaml', 'SACALaM', '0', 400, threads=8)
    out = run_cli(_grid_cmd(grid, tmp_path / 'runs', cluster), cwd=tmp_path)
    assert out.returncode == 2
    assert 'asks for 8 CPUs (train_cfgs:torch_threads), which no node of the cluster has (largest: 2 CPUs)' in out.stderr
    out = run_cli(_grid_cmd(grid, tmp_path / 'runs', f'127.0.0.1:{_free_port()}'), cwd=tmp_path)
    assert out.returncode == 2
    assert 'cannot reach a Ray cluster at' in out.stderr and 'nothing was submitted' in out.stderr
    assert not (tmp_path / 'runs').exists()


def test_the_run_lock_is_exclusive_and_taken_over_only_when_stale(tmp_path: Path) -> None:
    path = tmp_path / 'run.lock'
    first, second = RunLock(path, stale_s=60), RunLock(path, stale_s=60)
    assert first.acquire()
    assert not second.acquire()  # held, fresh, its process alive
    assert lock_holder(path)['token'] == first.token
    first.release()
    assert not path.exists() and second.acquire()
    second.release()

    dead = subprocess.Popen(['true'])  # noqa: S603,S607
    dead.wait()
    info = {'host': socket.gethostname(), 'pid': dead.pid, 'token': 'old', 'children': []}
    path.write_text(json.dumps(info))
    assert lock_holder(path) is None  # this host, process gone: stale at once
    path.write_text(json.dumps({**info, 'host': 'another-node', 'pid': 1}))
    assert lock_holder(path) is not None  # another node's: only its heartbeat tells
    os.utime(path, (time.time() - 61, time.time() - 61))
    assert lock_holder(path) is None
    third = RunLock(path, stale_s=60)
    assert third.acquire() and lock_holder(path)['token'] == third.token
    third.release()

    # a holder whose file now names another token has lost the run, and says so
    fourth = RunLock(path, stale_s=0.3)
    assert fourth.acquire()
    path.write_text(json.dumps({**info, 'token': 'intruder', 'pid': os.getpid()}))
    assert fourth.lost.wait(timeout=2.0)
    fourth.release()
    assert json.loads(path.read_text())['token'] == 'intruder'  # not removed: not its own
