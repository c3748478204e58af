"""Grids on a Ray cluster: ``omnisafe-alam grid FILE.yaml --log-dir DIR --ray [--address ADDR]``.

Each run of the grid becomes one Ray task that runs, on whichever node has room, the same
training command the local backend runs (:func:`omnisafe_alam.tools.grid._command`), asking for
the run's own resources: ``train_cfgs.torch_threads`` CPUs, and one GPU when
``train_cfgs.device`` is CUDA. The guarantees are the local grid's, across machines, provided
``DIR`` is one path that every node sees (NFS, a cluster file system):

- the config checks (:func:`~omnisafe_alam.tools.grid.check_runs`) and the plan run on the
  driver before anything is submitted; ``--dry-run`` lists the plan without reaching the cluster;
- a task decides what to do when it starts, not when it was submitted: finished runs are
  skipped, the plugin's runs continue from their newest full checkpoint, OmniSafe's set aside and
  restarted. So a task whose worker or node dies, retried by Ray (``max_retries``, bounded), goes
  on from the checkpoint, never from scratch when one exists;
- a run is trained by one process at a time: its task holds the run's lock
  (:class:`~omnisafe_alam.tools.grid.RunLock`, a file in ``DIR/.grid-locks`` with a heartbeat),
  which the local backend takes too. A retried task waits for its dead predecessor's lock to go
  stale (at once on the same host, where the dead process can be seen; after
  ``LOCK_STALE_S`` without a heartbeat from another);
- SIGINT / SIGTERM on the driver cancel the queued tasks and stop the running ones (a stop file
  on the shared directory, and ``ray.cancel``), which pass SIGTERM on to their trainers (the
  plugin's save a full checkpoint) and return; the driver exits once they have. The same command
  continues the grid.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omnisafe_alam.tools.grid import (
    LOCK_DIR,
    LOCK_STALE_S,
    GridError,
    GridRun,
    RunLock,
    _command,
    _run_dirs,
    _set_aside,
    _steps_done,
    lock_holder,
    lock_path,
    prepare,
    run_state,
)

__all__ = ['RAY_INSTALL', 'RayMissingError', 'RunFailedError', 'run_grid_ray', 'run_resources']

#: what a user without Ray is told to type
RAY_INSTALL = "pip install 'omnisafe-alam[ray]'"

#: how often Ray retries a run whose trainer failed or whose worker / node died
DEFAULT_RETRIES = 3


class RayMissingError(GridError):
    """``--ray`` without Ray installed."""


class RunFailedError(RuntimeError):
    """A trainer that exited with an error (Ray retries the task, from its checkpoint)."""


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise RayMissingError(f'the Ray backend needs Ray, which is not installed: {RAY_INSTALL}') from None
    return ray


def run_resources(cfgs: Any) -> dict[str, float]:
    """What one run (its built config, :func:`~omnisafe_alam.tools.grid.run_cfgs`) asks of a
    node: ``train_cfgs.torch_threads`` CPUs, a GPU on CUDA."""
    threads = int(cfgs.train_cfgs.torch_threads)
    gpus = 1.0 if str(cfgs.train_cfgs.device).startswith('cuda') else 0.0
    return {'num_cpus': float(threads), 'num_gpus': gpus}


def _die_with_parent() -> None:
    """In the trainer, before exec: SIGTERM when its task process dies (Linux), so that a killed
    worker leaves no trainer running alone; the plugin's trainer saves a checkpoint first."""
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop_child(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the trainer and wait for it (it saves a checkpoint), whatever interrupts come."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    while True:
        try:
            proc.wait()
            return
        except KeyboardInterrupt:
            continue


def train_on_node(run: GridRun, log_dir: str, stale_s: float = LOCK_STALE_S, stop_file: str | None = None) -> dict[str, Any]:
    """One run, inside its Ray task: take the run's lock, decide from the directory what to do,
    train in a child process, hand the driver's stop on as SIGTERM. The driver stops a task two
    ways, either of which is enough: it creates ``stop_file`` (on the shared log directory, seen
    from every node) and it cancels the task (``ray.cancel``: a KeyboardInterrupt here).

    Returns ``{'status': 'finished' | 'done' | 'stopped' | 'busy', 'host': ...}``.

    Raises:
        RunFailedError: the trainer exited with an error (the task is retried).
    """
    log_root = Path(log_dir)
    host = socket.gethostname()
    lock = RunLock(lock_path(log_root, run), stale_s)
    proc: subprocess.Popen[bytes] | None = None
    try:
        # a retry finds its dead predecessor's lock: wait until it has gone stale
        deadline = time.time() + 2 * stale_s
        while not lock.acquire():
            if time.time() > deadline:
                holder = lock_holder(lock.path, stale_s) or {}
                return {'status': 'busy', 'host': holder.get('host', '?')}
            time.sleep(1.0)
        stopped = (lambda: Path(stop_file).exists()) if stop_file else (lambda: False)
        if stopped():
            return {'status': 'stopped', 'host': host}
        state, run_dir = run_state(run, log_root, own_lock=lock)
        if state == 'done':
            return {'status': 'done', 'host': host}
        if state == 'restart':
            _set_aside(run_dir)
        variant = log_root / run.name
        variant.mkdir(parents=True, exist_ok=True)
        with (variant / 'grid.log').open('ab') as handle:
            handle.write(f'\n==== {time.strftime("%Y-%m-%d %H:%M:%S")} {state} on {host} (ray)\n'.encode())
            handle.flush()
            proc = subprocess.Popen(  # noqa: S603
                _command(run, state, run_dir, log_root),
                stdout=handle,
                stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # noqa: PLW1509
                env={**os.environ, 'PYTHONUNBUFFERED': '1'},
            )
        lock.add_child(proc.pid)
        while proc.poll() is None:
            if lock.lost.is_set():
                _stop_child(proc)
                raise GridError(f'{run.name}: another grid took the run over (lock {lock.path}); stopped here')
            if stopped():
                _stop_child(proc)
                return {'status': 'stopped', 'host': host}
            time.sleep(0.5)
        if proc.returncode != 0:
            raise RunFailedError(f'{run.name}: the trainer on {host} exited with {proc.returncode}; see {variant / "grid.log"}')
        return {'status': 'finished', 'host': host}
    except KeyboardInterrupt:  # ray.cancel: the driver was stopped
        if proc is not None:
            _stop_child(proc)
        return {'status': 'stopped', 'host': host}
    finally:
        lock.release()


@dataclass
class _Entry:
    run: GridRun
    state: str  # done | queued | running | finished | failed | stopped | busy
    host: str = ''
    note: str = ''


class _Board:
    """What the driver shows: counts, and every running run with its steps so far; a live table
    on a terminal, plain lines (changes, and a summary every ``every`` seconds) otherwise."""

    def __init__(self, entries: list[_Entry], log_dir: Path, echo: Any, live: bool | None = None, every: float = 60.0) -> None:
        self.entries, self.log_dir, self.echo, self.every = entries, log_dir, echo, every
        self.live = sys.stdout.isatty() if live is None else live
        self._last_summary = time.time()
        self._last_show = 0.0
        self._live: Any = None

    def steps(self, entry: _Entry) -> int:
        dirs = _run_dirs(self.log_dir / entry.run.name)
        return _steps_done(dirs[0]) if len(dirs) == 1 else 0

    def refresh(self) -> None:
        """Mark queued runs whose lock a task now holds as running (and on which host)."""
        for entry in self.entries:
            if entry.state == 'queued':
                holder = lock_holder(lock_path(self.log_dir, entry.run))
                if holder is not None:
                    entry.state, entry.host = 'running', str(holder.get('host', '?'))
                    if not self.live:
                        self.echo(f'running  {entry.run.name} on {entry.host}')

    def counts(self) -> dict[str, int]:
        out = {key: 0 for key in ('done', 'running', 'queued', 'failed', 'stopped')}
        for entry in self.entries:
            key = {'finished': 'done', 'busy': 'running'}.get(entry.state, entry.state)
            out[key] = out.get(key, 0) + 1
        return out

    def summary(self) -> str:
        return ', '.join(f'{n} {key}' for key, n in self.counts().items())

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title=f'grid {self.log_dir}: {self.summary()}', title_justify='left')
        for column in ('run', 'state', 'node', 'steps'):
            table.add_column(column, justify='right' if column == 'steps' else 'left')
        for entry in self.entries:
            if entry.state in ('running', 'failed', 'stopped', 'busy'):
                steps = f'{self.steps(entry)} / {entry.run.total_steps}'
                table.add_row(entry.run.name, entry.state + (f' ({entry.note})' if entry.note else ''), entry.host, steps)
        return table

    def __enter__(self) -> _Board:
        if self.live:
            from rich.live import Live

            self._live = Live(self._table(), refresh_per_second=1, transient=False)
            self._live.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(*exc)
        self.echo(f'grid: {self.summary()}')

    def show(self, interval: float = 5.0) -> None:
        """Refresh from the shared directory (locks, progress.csv), at most every ``interval``
        seconds: with hundreds of runs on a network file system, not on every poll."""
        if time.time() - self._last_show < interval:
            return
        self._last_show = time.time()
        self.refresh()
        if self._live is not None:
            self._live.update(self._table())
        elif time.time() - self._last_summary >= self.every:
            self._last_summary = time.time()
            running = [f'{e.run.name} {self.steps(e)}/{e.run.total_steps}' for e in self.entries if e.state == 'running']
            self.echo(f'grid: {self.summary()}' + (f'; running: {", ".join(running)}' if running else ''))

    def mark(self, entry: _Entry, state: str, host: str = '', note: str = '') -> None:
        entry.state, entry.host, entry.note = state, host or entry.host, note
        if not self.live:
            self.echo(f'{state:8s} {entry.run.name}' + (f' on {entry.host}' if entry.host else '') + (f': {note}' if note else ''))


def _reachable(address: str, timeout: float = 5.0) -> str | None:
    """Why ``HOST:PORT`` (or ``ray://HOST:PORT``) does not answer a TCP connect, or None (Ray
    itself retries an unreachable address for minutes before it says so)."""
    target = address.split('://', 1)[-1]
    host, _, port = target.rpartition(':')
    if not host or not port.isdigit():
        return None  # 'auto', 'local', or something only Ray can judge
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            return None
    except OSError as error:
        return f'{host}:{port} does not answer: {error.strerror or error}'


def _connect(ray: Any, address: str | None) -> str:
    address = address or os.environ.get('RAY_ADDRESS') or 'auto'
    problem = _reachable(address)
    if problem:
        raise GridError(
            f'cannot reach a Ray cluster at {address!r} ({problem}); start one with `ray start --head` '
            'and pass --address HOST:PORT (or set RAY_ADDRESS); nothing was submitted',
        )
    try:
        with open(os.devnull, 'w', encoding='utf-8') as sink, contextlib.redirect_stderr(sink):
            ray.init(address=address, log_to_driver=False, logging_level='ERROR')
    except Exception as error:  # noqa: BLE001  (Ray raises ConnectionError, RuntimeError, ...)
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise GridError(
            f'cannot reach a Ray cluster at {address!r} ({first}); start one with `ray start --head` '
            'and pass --address HOST:PORT (or set RAY_ADDRESS); nothing was submitted',
        ) from None
    return address


def _check_fit(ray: Any, runs: list[GridRun], resources: dict[str, dict[str, float]]) -> None:
    nodes = [node.get('Resources', {}) for node in ray.nodes() if node.get('Alive')]
    for run in runs:
        need = resources[run.name]
        if not any(n.get('CPU', 0) >= need['num_cpus'] and n.get('GPU', 0) >= need['num_gpus'] for n in nodes):
            biggest = max((n.get('CPU', 0) for n in nodes), default=0)
            raise GridError(
                f'{run.name} asks for {need["num_cpus"]:g} CPUs (train_cfgs:torch_threads)'
                + (' and a GPU (train_cfgs:device)' if need['num_gpus'] else '')
                + f', which no node of the cluster has (largest: {biggest:g} CPUs'
                + ('' if not need['num_gpus'] else f', GPUs: {max((n.get("GPU", 0) for n in nodes), default=0):g}')
                + '); set train_cfgs:torch_threads in the grid file',
            )


def run_grid_ray(
    path: str | Path,
    log_dir: str | Path,
    address: str | None = None,
    dry_run: bool = False,
    echo: Any = print,
    retries: int = DEFAULT_RETRIES,
    stale_s: float = LOCK_STALE_S,
    live: bool | None = None,
) -> int:
    """Run (or continue) a grid on a Ray cluster; returns how many runs failed (or, once
    stopped, are unfinished), as :func:`~omnisafe_alam.tools.grid.run_grid` does.

    Raises:
        RayMissingError: Ray is not installed.
        GridError: a bad grid file or run directory, an unreachable cluster, or a run that no
            node can hold; before anything is submitted.
    """
    ray = _import_ray()
    log_dir = Path(log_dir).resolve()

    def note(run: GridRun, cfgs: Any) -> str:
        need = run_resources(cfgs)
        return f'  [{need["num_cpus"]:g} CPU' + (', 1 GPU' if need['num_gpus'] else '') + ']'

    todo, built = prepare(path, log_dir, echo, note)
    resources = {name: run_resources(cfgs) for name, cfgs in built.items()}
    if dry_run:
        return 0
    pending = [(run, state) for run, state, _ in todo if state not in ('done', 'running')]
    if not pending:
        echo('grid: nothing to do')
        return 0
    where = _connect(ray, address)
    try:
        _check_fit(ray, [run for run, _ in pending], resources)
        echo(f'submitting {len(pending)} runs to the Ray cluster at {where}')
        task = ray.remote(train_on_node)
        stop_file = log_dir / LOCK_DIR / f'stop-{uuid.uuid4().hex}'
        entries = [_Entry(run, 'done' if state == 'done' else 'running' if state == 'running' else 'queued') for run, state, _ in todo]
        by_name = {entry.run.name: entry for entry in entries}
        refs = {
            task.options(
                name=run.name,
                max_retries=retries,
                retry_exceptions=[RunFailedError],
                **resources[run.name],
            ).remote(run, str(log_dir), stale_s, str(stop_file)): by_name[run.name]
            for run, _ in pending
        }
        stopping: list[int] = []

        def stop(signum: int, frame: Any) -> None:
            if not stopping:
                echo(f'got signal {signum}: stopping the runs (the plugin\'s save a checkpoint first)')
                stop_file.parent.mkdir(parents=True, exist_ok=True)
                stop_file.touch()
                for ref in refs:
                    with contextlib.suppress(Exception):
                        ray.cancel(ref, force=False)
            stopping.append(signum)

        previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGINT, signal.SIGTERM)}
        failed = unfinished = 0
        try:
            with _Board(entries, log_dir, echo, live=live) as board:
                waiting = list(refs)
                while waiting:
                    ready, waiting = ray.wait(waiting, num_returns=len(waiting), timeout=1.0)
                    for ref in ready:
                        entry = refs[ref]
                        try:
                            result = ray.get(ref)
                        except ray.exceptions.TaskCancelledError:
                            board.mark(entry, 'stopped', note='cancelled before it started')
                            unfinished += 1
                            continue
                        except Exception as error:  # noqa: BLE001  (the task's error, after its retries)
                            cause = getattr(error, 'cause', None) or error
                            board.mark(entry, 'failed', note=str(cause).strip().splitlines()[-1][:300])
                            failed += 1
                            continue
                        status = result['status']
                        if status in ('finished', 'done'):
                            board.mark(entry, 'finished', result['host'])
                        elif status == 'busy':
                            board.mark(entry, 'busy', result['host'], 'another grid holds its lock')
                        else:
                            board.mark(entry, 'stopped', result['host'])
                            unfinished += 1
                    board.show()
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            stop_file.unlink(missing_ok=True)
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
    if stopping:
        echo('stopped; run the same command again to continue')
        return failed + unfinished
    return failed
