"""Experiment grids that survive interruptions: ``omnisafe-alam grid FILE.yaml --log-dir DIR``.

The YAML is OmniSafe's benchmark format (every ``group:key`` line a list of values; the runs are
their cartesian product), so a file written for ``omnisafe benchmark`` runs here unchanged. What
differs from ``omnisafe benchmark``:

- every run has a fixed directory, ``DIR/<algo>-{<env_id>}/seed-<s>[,<key>=<value>...]/``
  (OmniSafe's own run directory, ``<algo>-{<env_id>}/seed-000-<time>/``, inside it), so running
  the same command again finds each run's state:

  * finished (its ``progress.csv`` reached ``train_cfgs.total_steps``): skipped;
  * a plugin run with a full checkpoint (``state/step-N.pt``): continued by
    ``omnisafe-alam resume`` (to the grid's ``total_steps``: raising it extends finished runs);
  * anything else (OmniSafe's own algorithms keep no full state, or a run killed before its first
    checkpoint): its partial directory is renamed ``*.incomplete-N`` and the run starts again;
  * being trained by another grid process (its lock, ``DIR/.grid-locks/<run>.lock``, held: its
    holder's heartbeat is fresh, and on this host its process is alive; or, from a grid of
    before the lock, the pid in ``grid.pid`` alive): left alone. The lock is what a grid on
    another machine of a cluster (``--ray``) sees too: a pid alone is not enough there;

- runs that cannot resume (OmniSafe's algorithms) are started first, so an interruption late in
  the grid costs only resumable work, then the plugin's unfinished runs, then its new ones;
- a key whose group (``alam_cfgs``, ``checkpoint_cfgs``, ...) only some of the grid's algorithms
  have applies to those (OmniSafe's SACLag has no ``alam_cfgs``); a group none of them has, and
  any key inside a group that an algorithm does not know, is refused, naming it, before anything
  runs;
- a run whose saved ``config.json`` differs from the grid file in a key the file sets is refused,
  naming the keys (edit the file back, or move the run away), rather than counted as done;
- SIGINT / SIGTERM are passed on to the runs, whose plugin algorithms save a full checkpoint
  before they exit.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pandas as pd
import yaml

__all__ = [
    'GridError',
    'GridRun',
    'RunLock',
    'config_mismatch',
    'default_groups',
    'expand_grid',
    'lock_holder',
    'lock_path',
    'load_grid',
    'plan',
    'run_grid',
    'run_state',
]



#: the training process of a run, written while a grid runs it
PID_FILE = 'grid.pid'

#: the runs' locks, one file per run, under the grid's log directory
LOCK_DIR = '.grid-locks'

#: seconds a lock may go without its holder's heartbeat before another grid may take the run
#: (a holder on a node that died cannot release it)
LOCK_STALE_S = 60.0


class GridError(ValueError):
    """A grid file or run directory that cannot be run as asked."""


@dataclass
class GridRun:
    """One point of the grid: an algorithm, a task, a seed and the config overrides."""

    algo: str
    env_id: str
    seed: int
    custom_cfgs: dict[str, Any]
    #: the varied keys other than algo / env_id / seed, for the directory name
    tags: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        suffix = ''.join(f',{key.split(":")[-1]}={_short(value)}' for key, value in self.tags.items())
        return f'{self.algo}-{{{self.env_id}}}/seed-{self.seed}{suffix}'

    @property
    def total_steps(self) -> int:
        return int(self.custom_cfgs['train_cfgs']['total_steps'])


def _short(value: Any) -> str:
    return str(value).replace(' ', '').replace('[', '').replace(']', '').replace(',', 'x')


def _nest(key: str, value: Any) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    node = nested
    parts = key.split(':')
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return nested


def _merge(into: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    for key, value in other.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value
    return into


def load_grid(path: str | Path) -> dict[str, list[Any]]:
    """The grid file as ``{key: [values]}``; ``algo``, ``env_id`` and ``seed`` are required."""
    path = Path(path)
    if not path.exists():
        raise GridError(f'grid file {path} not found')
    raw = yaml.safe_load(path.read_text(encoding='utf-8')) or {}
    if not isinstance(raw, dict):
        raise GridError(f'{path}: expected a mapping of keys to lists of values')
    for key in ('algo', 'env_id', 'seed'):
        if key not in raw:
            raise GridError(f'{path}: the grid needs a `{key}:` line (a list of values)')
    grid = {}
    for key, values in raw.items():
        if not isinstance(values, list) or not values:
            raise GridError(f'{path}: `{key}` must be a non-empty list of values, got {values!r}')
        grid[key] = values
    return grid


def default_groups(algo: str, env_id: str) -> set[str]:
    """The top-level key groups of an algorithm's default config (OmniSafe's or the plugin's)."""
    from omnisafe.algorithms import ALGORITHM2TYPE
    from omnisafe.utils.config import get_default_kwargs_yaml

    import omnisafe_alam  # noqa: F401  (registers the plugin's YAMLs)

    if algo not in ALGORITHM2TYPE:
        raise GridError(f'unknown algorithm {algo!r}')
    with _quiet():
        cfgs = get_default_kwargs_yaml(algo, env_id, ALGORITHM2TYPE[algo])
    return {key for key, value in cfgs.items() if isinstance(value, dict)}


def expand_grid(grid: dict[str, list[Any]], groups: Callable[[str, str], set[str]] | None = None) -> list[GridRun]:
    """Every combination of the grid's values, as runs.

    A ``group:key`` line applies to the runs whose algorithm has ``group`` (``groups(algo,
    env_id)``, default :func:`default_groups`); a group that no algorithm of the grid has is an
    error.
    """
    groups = groups or default_groups
    keys = list(grid)
    varied = [key for key in keys if len(grid[key]) > 1 and key not in ('algo', 'env_id', 'seed')]
    known = {(str(a), str(e)): groups(str(a), str(e)) for a in grid['algo'] for e in grid['env_id']}
    for key in keys:
        group = key.split(':')[0]
        if ':' in key and not any(group in g for g in known.values()):
            raise GridError(f'`{key}`: no algorithm of the grid has the key group {group}')
    runs = []
    for values in itertools.product(*(grid[key] for key in keys)):
        point = dict(zip(keys, values))
        algo, env_id, seed = str(point.pop('algo')), str(point.pop('env_id')), int(point.pop('seed'))
        custom: dict[str, Any] = {'seed': seed}
        for key, value in point.items():
            if ':' in key and key.split(':')[0] not in known[(algo, env_id)]:
                continue
            _merge(custom, _nest(key, value))
        runs.append(GridRun(algo, env_id, seed, custom, {key: point[key] for key in varied}))
    return runs


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """OmniSafe prints a line for every YAML it loads."""
    with open(os.devnull, 'w', encoding='utf-8') as sink, contextlib.redirect_stdout(sink):
        yield


def run_cfgs(run: GridRun) -> Any:
    """The run's whole config as OmniSafe builds it (defaults, task section, the grid's keys),
    after OmniSafe's own checks; no environment is built."""
    import copy

    from omnisafe.algorithms.algo_wrapper import AlgoWrapper

    import omnisafe_alam  # noqa: F401  (registers the plugin)

    wrapper = AlgoWrapper.__new__(AlgoWrapper)
    wrapper.algo, wrapper.env_id = run.algo, run.env_id
    wrapper.train_terminal_cfgs, wrapper.custom_cfgs = None, copy.deepcopy(run.custom_cfgs)
    with _quiet():
        wrapper.cfgs = wrapper._init_config()  # noqa: SLF001
    wrapper._init_checks()  # noqa: SLF001
    return wrapper.cfgs


#: OmniSafe's SAC-based algorithms; the plugin's are SAC-based but for :data:`NOT_SAC_BASED`
SAC_BASED = ('SAC', 'SACLag', 'SACPID')
#: the plugin's algorithms without SAC's actor and temperature (ALGD: a diffusion policy)
NOT_SAC_BASED = ('ALGD',)

#: The SAC backbone: what the SAC-based algorithms of a fair comparison share (the paper's
#: Sec. VI: "SAC as the shared backbone across all Lagrangian methods"). ``algo_cfgs:alpha`` counts
#: only where the temperature is fixed (auto-tuning starts OmniSafe's SAC at 1 whatever it says).
BACKBONE_KEYS = (
    'train_cfgs:total_steps',
    'algo_cfgs:auto_alpha',
    'algo_cfgs:alpha',
    'algo_cfgs:policy_delay',
    'algo_cfgs:batch_size',
    'algo_cfgs:size',
    'algo_cfgs:gamma',
    'algo_cfgs:polyak',
    'algo_cfgs:start_learning_steps',
    'algo_cfgs:update_cycle',
    'algo_cfgs:update_iters',
    'algo_cfgs:max_grad_norm',
    'algo_cfgs:obs_normalize',
    'algo_cfgs:reward_normalize',
    'model_cfgs:actor:hidden_sizes',
    'model_cfgs:actor:activation',
    'model_cfgs:actor:lr',
    'model_cfgs:critic:hidden_sizes',
    'model_cfgs:critic:activation',
    'model_cfgs:critic:lr',
)

#: Reward-critic settings that are part of the backbone but live in the plugin's ``alam_cfgs``:
#: what the reward critics regress on (the task's reward, or ``(1 - gamma) r / s`` under
#: ``penalty_scale: normalize``) and whether they have LayerNorm. OmniSafe's SAC-based
#: algorithms have neither key: their critics learn the task's reward without LayerNorm.
REWARD_CRITIC_KEYS = ('derived:reward_critic_target', 'derived:reward_critic_layer_norm')


def backbone(cfgs: Any) -> dict[str, Any]:
    """The :data:`BACKBONE_KEYS` and :data:`REWARD_CRITIC_KEYS` of a run's config (``alpha``
    left out under auto-tuning)."""
    leaves = _leaves(cfgs.todict() if hasattr(cfgs, 'todict') else cfgs)
    out = {key: leaves.get(key) for key in BACKBONE_KEYS}
    normalized = leaves.get('alam_cfgs:penalty_scale') == 'normalize'
    out['derived:reward_critic_target'] = '(1 - gamma) r / s' if normalized else 'r'
    out['derived:reward_critic_layer_norm'] = bool(leaves.get('alam_cfgs:reward_critic_layer_norm', False))
    if out['algo_cfgs:auto_alpha']:
        out.pop('algo_cfgs:alpha')
    return {key: list(v) if isinstance(v, tuple) else v for key, v in out.items()}


def backbone_mismatches(runs: list[GridRun]) -> list[str]:
    """One line per task (and setting the grid varies) whose SAC-based algorithms do not share
    one SAC backbone, naming each differing key and the algorithms on each value."""
    from omnisafe_alam.glue.registration import PLUGIN_ALGORITHMS

    def sac_based(algo: str) -> bool:
        return (algo in SAC_BASED or algo in PLUGIN_ALGORITHMS) and algo not in NOT_SAC_BASED

    return _mismatches(runs, sac_based, backbone, 'the SAC backbone differs')


#: The state-wise family (one constraint ``F(x) <= d`` each, a multiplier network or scalar).
STATEWISE = ('SACALaM', 'SACALaMGA', 'SACLagNet', 'ASAC')

#: The constraint a comparison of the state-wise family must share, so that it measures the
#: multiplier mechanisms alone: the tolerance ``d``, the step cost (indicator or raw), its bound,
#: and the discount of ``F`` (``alam_cfgs.cost_gamma``, resolved: 0 is ``algo_cfgs.gamma``).
CONSTRAINT_KEYS = ('alam_cfgs:d', 'alam_cfgs:cost_indicator', 'alam_cfgs:cost_max', 'derived:cost_gamma')


def constraint(cfgs: Any) -> dict[str, Any]:
    """The :data:`CONSTRAINT_KEYS` of a state-wise run's config."""
    from omnisafe_alam.core.functional import cost_discount

    leaves = _leaves(cfgs.todict() if hasattr(cfgs, 'todict') else cfgs)
    out = {key: leaves.get(key) for key in CONSTRAINT_KEYS if not key.startswith('derived:')}
    gamma_c = float(leaves.get('alam_cfgs:cost_gamma', 0.0))
    out['derived:cost_gamma'] = cost_discount(gamma_c, float(leaves['algo_cfgs:gamma']))
    return out


def constraint_mismatches(runs: list[GridRun]) -> list[str]:
    """One line per task (and setting the grid varies) whose state-wise algorithms
    (:data:`STATEWISE`) do not share one constraint (:data:`CONSTRAINT_KEYS`)."""
    return _mismatches(runs, lambda algo: algo in STATEWISE, constraint, 'the state-wise constraint differs')


def _mismatches(runs: list[GridRun], member: Callable[[str], bool], keys_of: Callable[[Any], dict[str, Any]], what: str) -> list[str]:
    """``{task} {tags}: {what}: key: value (algos) / value (algos); ...`` for every task whose
    member algorithms differ in ``keys_of(config)``."""
    groups: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for run in runs:
        if not member(run.algo):
            continue
        where = (run.env_id, ','.join(f'{k}={v}' for k, v in run.tags.items()))
        groups.setdefault(where, {}).setdefault(run.algo, keys_of(run_cfgs(run)))
    lines = []
    for (env_id, tags), by_algo in groups.items():
        keys = sorted({key for values in by_algo.values() for key in values})
        differing = []
        for key in keys:
            values: dict[str, list[str]] = {}
            for algo, cfg in by_algo.items():
                values.setdefault(repr(cfg.get(key, 'auto')), []).append(algo)
            if len(values) > 1:
                differing.append(f"{key.split(':', 1)[1]}: " + ' / '.join(f"{v} ({', '.join(a)})" for v, a in values.items()))
        if differing:
            lines.append(f"{env_id}{' ' + tags if tags else ''}: {what}: " + '; '.join(differing))
    return lines


def check_runs(runs: list[GridRun]) -> dict[str, Any]:
    """Build every run's config as OmniSafe would (no environment) and validate it; returns the
    configs by run name.

    Raises:
        GridError: naming the run and the problem (unknown algorithm, task or key, a bad value).
    """
    from omnisafe_alam.glue.config import validate_run_cfgs
    from omnisafe_alam.glue.registration import PLUGIN_ALGORITHMS, load_defaults

    built = {}
    for run in runs:
        try:
            # OmniSafe's own config merge and key check, without building the algorithm
            cfgs = built[run.name] = run_cfgs(run)
            if run.algo in PLUGIN_ALGORITHMS:
                validate_run_cfgs(cfgs, load_defaults(run.algo, run.env_id))
            if 'total_steps' not in run.custom_cfgs.get('train_cfgs', {}):
                raise GridError('the grid must set train_cfgs:total_steps')
        except (AssertionError, KeyError, ValueError, TypeError) as error:
            raise GridError(f'{run.name}: {error}') from None
    return built


def _run_dirs(variant_dir: Path) -> list[Path]:
    return sorted(p.parent for p in variant_dir.glob('*/seed-*/config.json'))


def _steps_done(run_dir: Path) -> int:
    progress = run_dir / 'progress.csv'
    try:
        frame = pd.read_csv(progress)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return 0
    if frame.empty or 'TotalEnvSteps' not in frame:
        return 0
    return int(frame['TotalEnvSteps'].iloc[-1])


def _leaves(tree: dict[str, Any], prefix: str = '') -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_leaves(value, f'{prefix}{key}:'))
        else:
            out[prefix + key] = value
    return out


def config_mismatch(run: GridRun, run_dir: Path) -> list[str]:
    """``key=saved (grid: value)`` for every key the grid sets that the run's config.json holds
    with another value (``logger_cfgs:log_dir`` and ``train_cfgs:total_steps`` aside)."""
    saved = _leaves(json.loads((run_dir / 'config.json').read_text(encoding='utf-8')))
    wanted = _leaves(run.custom_cfgs)
    wanted.pop('logger_cfgs:log_dir', None)
    # a longer budget extends a run (resume --total-steps), a shorter one finds it done
    wanted.pop('train_cfgs:total_steps', None)
    return [
        f'{key}={saved.get(key)!r} (grid: {value!r})'
        for key, value in wanted.items()
        if saved.get(key) != value and not (isinstance(value, (int, float)) and saved.get(key) == float(value))
    ]


def lock_path(log_dir: Path, run: GridRun) -> Path:
    """The file that says which grid process, on which host, trains ``run``."""
    return Path(log_dir) / LOCK_DIR / (run.name.replace('/', '__') + '.lock')


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        info = json.loads(path.read_text(encoding='utf-8'))
        info['age'] = time.time() - path.stat().st_mtime
    except (FileNotFoundError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def lock_holder(path: Path, stale_s: float = LOCK_STALE_S) -> dict[str, Any] | None:
    """The lock's holder (``host``, ``pid``, ``token``, ``age`` of its last heartbeat) while it
    holds the run; None when the file is absent or stale: its heartbeat older than ``stale_s``, or
    its process, on this host, gone (a killed worker)."""
    info = _read_lock(path)
    if info is None:
        return None
    if info['age'] > stale_s:
        return None
    if info.get('host') == socket.gethostname():
        pids = [int(info.get('pid', -1)), *(int(pid) for pid in info.get('children', []))]
        if not any(_alive(pid) for pid in pids):
            return None
    return info


class RunLock:
    """A run's lock on the shared log directory, for grids on one machine or many.

    :meth:`acquire` creates the file atomically (``O_EXCL``) or, if the one there is stale (see
    :func:`lock_holder`), moves it away first; a thread then refreshes its modification time
    every ``stale_s / 6`` seconds. A holder that finds another's token in the file has lost the
    run (``lost`` is set) and must stop training it.
    """

    def __init__(self, path: Path, stale_s: float = LOCK_STALE_S) -> None:
        self.path = Path(path)
        self.stale_s = stale_s
        self.token = uuid.uuid4().hex
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> bool:
        """Take the lock if it is free or stale; False while another holder has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                seen = _read_lock(self.path)
                if lock_holder(self.path, self.stale_s) is not None:
                    return False
                # stale: move that one file aside (of two takers, one rename finds it)
                current = _read_lock(self.path)
                if seen is not None and current is not None and current.get('token') != seen.get('token'):
                    continue
                aside = self.path.with_name(f'{self.path.name}.stale-{self.token}')
                with contextlib.suppress(FileNotFoundError):
                    os.rename(self.path, aside)
                    aside.unlink()
                continue
            self._info = {'host': socket.gethostname(), 'pid': os.getpid(), 'token': self.token,
                          'since': time.strftime('%Y-%m-%d %H:%M:%S'), 'children': []}
            with os.fdopen(fd, 'w', encoding='utf-8') as handle:
                json.dump(self._info, handle)
            self._thread = threading.Thread(target=self._beat, name=f'lock {self.path.name}', daemon=True)
            self._thread.start()
            return True
        return False

    def add_child(self, pid: int) -> None:
        """Name the training process too: on this host the lock holds while either lives (a
        trainer told to stop by its parent's death still writes its checkpoint)."""
        self._info['children'].append(int(pid))
        temporary = self.path.with_name(f'{self.path.name}.{self.token}')
        temporary.write_text(json.dumps(self._info), encoding='utf-8')
        if self.owned():
            os.replace(temporary, self.path)
        else:
            temporary.unlink()
            self.lost.set()

    def owned(self) -> bool:
        info = _read_lock(self.path)
        return info is not None and info.get('token') == self.token

    def _beat(self) -> None:
        while not self._stop.wait(self.stale_s / 6):
            if not self.owned():
                self.lost.set()
                return
            with contextlib.suppress(FileNotFoundError):
                os.utime(self.path)

    def release(self) -> None:
        """Stop the heartbeat and remove the file if it is still ours."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if self.owned():
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()


def _live_pid(variant_dir: Path) -> int | None:
    """The pid in ``grid.pid`` (``PID [HOST]``) if that process still runs on this host (a grid
    here is training the run; a pid written on another host says nothing here)."""
    try:
        fields = (variant_dir / PID_FILE).read_text(encoding='utf-8').split()
        pid = int(fields[0])
    except (FileNotFoundError, ValueError, IndexError):
        return None
    if len(fields) > 1 and fields[1] != socket.gethostname():
        return None
    return pid if _alive(pid) else None


def run_state(run: GridRun, log_dir: Path, own_lock: RunLock | None = None) -> tuple[str, Path | None]:
    """``('done' | 'running' | 'resume' | 'restart' | 'new', run directory or None)`` for one
    grid point (``running``: another grid's process holds its lock or, on this host, is named in
    ``grid.pid``); ``own_lock``: the caller's, not counted as another's."""
    variant_dir = log_dir / run.name
    holder = lock_holder(lock_path(log_dir, run))
    if holder is not None and (own_lock is None or holder.get('token') != own_lock.token):
        return 'running', None
    if own_lock is None and _live_pid(variant_dir) is not None:
        return 'running', None
    dirs = _run_dirs(variant_dir)
    if not dirs:
        return 'new', None
    if len(dirs) > 1:
        raise GridError(f'{variant_dir} holds {len(dirs)} runs ({[str(d) for d in dirs]}); keep one')
    run_dir = dirs[0]
    differences = config_mismatch(run, run_dir)
    if differences:
        raise GridError(
            f'{run_dir} was trained with {", ".join(differences)}; the grid file now says otherwise. '
            'Restore the file, or move the run away to train it again',
        )
    if _steps_done(run_dir) >= run.total_steps:
        return 'done', run_dir
    if any((run_dir / 'state').glob('step-*.pt')):
        return 'resume', run_dir
    return 'restart', run_dir


def plan(runs: list[GridRun], log_dir: Path) -> list[tuple[GridRun, str, Path | None]]:
    """The runs with their state, in the order they will start: runs that cannot resume
    (OmniSafe's algorithms) first, so that a stop late in the grid costs only resumable work; then
    the plugin's started runs, then its new ones (each group in the file's order: put ``seed:``
    first for one seed of every algorithm before the next); done and running ones last."""
    from omnisafe_alam.glue.registration import PLUGIN_ALGORITHMS

    def rank(item: tuple[GridRun, str, Path | None]) -> int:
        run, state, _ = item
        if state in ('done', 'running'):
            return 3
        if run.algo not in PLUGIN_ALGORITHMS:
            return 0
        return 1 if state == 'resume' else 2

    return sorted(((run, *run_state(run, log_dir)) for run in runs), key=rank)


def _command(run: GridRun, state: str, run_dir: Path | None, log_dir: Path) -> list[str]:
    if state == 'resume':
        return [sys.executable, '-m', 'omnisafe_alam', 'resume', str(run_dir), '--total-steps', str(run.total_steps)]
    cfgs = json.loads(json.dumps(run.custom_cfgs))
    cfgs.setdefault('logger_cfgs', {})['log_dir'] = str(log_dir / run.name)
    payload = json.dumps({'algo': run.algo, 'env_id': run.env_id, 'custom_cfgs': cfgs})
    return [sys.executable, '-m', 'omnisafe_alam.tools.grid', payload]


def _set_aside(run_dir: Path) -> Path:
    """Rename a run that cannot continue to ``<variant>.incomplete-N`` (kept for inspection)."""
    variant_dir = run_dir.parent.parent
    n = 1
    while (target := variant_dir.with_name(f'{variant_dir.name}.incomplete-{n}')).exists():
        n += 1
    shutil.move(str(variant_dir), str(target))
    return target


def prepare(
    path: str | Path,
    log_dir: Path,
    echo: Any,
    note: Callable[[GridRun, Any], str] | None = None,
) -> tuple[list[tuple[GridRun, str, Path | None]], dict[str, Any]]:
    """What both backends do before anything starts: expand and check the grid (configs built
    once), warn about differing SAC backbones and state-wise constraints, plan, and list each
    run's state (``note(run, cfgs)`` appended to its line). Returns the plan and the configs by
    run name."""
    runs = expand_grid(load_grid(path))
    built = check_runs(runs)
    for line in backbone_mismatches(runs):
        echo(f'WARNING: {line}: the comparison measures backbones as well as safety mechanisms')
    for line in constraint_mismatches(runs):
        echo(f'WARNING: {line}: the comparison measures constraints as well as multiplier mechanisms')
    todo = plan(runs, log_dir)
    for run, state, run_dir in todo:
        echo(
            f'{state:8s} {run.name}' + (f'  ({_steps_done(run_dir)} of {run.total_steps} steps)' if run_dir else '')
            + (note(run, built[run.name]) if note else ''),
        )
    return todo, built


def run_grid(path: str | Path, log_dir: str | Path, jobs: int = 1, dry_run: bool = False, echo: Any = print) -> int:
    """Run (or continue) a grid; returns how many runs failed (or, once stopped, are unfinished)."""
    log_dir = Path(log_dir).resolve()
    todo, _ = prepare(path, log_dir, echo)
    if dry_run:
        return 0
    pending = [(run, state, run_dir) for run, state, run_dir in todo if state not in ('done', 'running')]
    running: dict[subprocess.Popen[bytes], GridRun] = {}
    locks: dict[subprocess.Popen[bytes], RunLock] = {}
    failed = unfinished = 0
    stopping: list[int] = []

    def forward(signum: int, frame: Any) -> None:
        stopping.append(signum)
        for proc in running:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        while pending or running:
            while pending and len(running) < jobs and not stopping:
                run, state, run_dir = pending.pop(0)
                lock = RunLock(lock_path(log_dir, run))
                if not lock.acquire():
                    echo(f'running  {run.name} (taken by another grid meanwhile)')
                    continue
                state, run_dir = run_state(run, log_dir, own_lock=lock)
                if state == 'done':
                    lock.release()
                    continue
                if state == 'restart':
                    echo(f'{run.name}: no full checkpoint, set aside as {_set_aside(run_dir)}; starting again')
                (log_dir / run.name).mkdir(parents=True, exist_ok=True)
                log = log_dir / run.name / 'grid.log'
                with log.open('ab') as handle:
                    handle.write(f'\n==== {time.strftime("%Y-%m-%d %H:%M:%S")} {state}\n'.encode())
                    proc = subprocess.Popen(  # noqa: S603
                        _command(run, state, run_dir, log_dir),
                        stdout=handle,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                running[proc] = run
                locks[proc] = lock
                lock.add_child(proc.pid)
                (log_dir / run.name / PID_FILE).write_text(f'{proc.pid} {socket.gethostname()}', encoding='utf-8')
                echo(f'started  {run.name} ({state}), log {log}')
            time.sleep(1.0)
            for proc in [p for p in running if p.poll() is not None]:
                run = running.pop(proc)
                (log_dir / run.name / PID_FILE).unlink(missing_ok=True)
                locks.pop(proc).release()
                if proc.returncode == 0:
                    echo(f'finished {run.name}')
                elif stopping and proc.returncode in (128 + signal.SIGTERM, 128 + signal.SIGINT, -signal.SIGTERM):
                    unfinished += 1
                    echo(f'stopped  {run.name} (exit {proc.returncode})')
                else:
                    failed += 1
                    echo(f'FAILED   {run.name} (exit {proc.returncode}); see {log_dir / run.name / "grid.log"}')
            if stopping and not running:
                break
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for lock in locks.values():
            lock.release()
    if stopping:
        echo('stopped; run the same command again to continue')
        return failed + unfinished + len(pending)
    return failed


def _train(payload: str) -> None:
    """One grid run in this process (the child side of :func:`run_grid`)."""
    spec = json.loads(payload)
    import omnisafe

    import omnisafe_alam  # noqa: F401  (registers the plugin)

    agent = omnisafe.Agent(spec['algo'], spec['env_id'], custom_cfgs=spec['custom_cfgs'])
    agent.learn()


if __name__ == '__main__':
    os.environ.setdefault('PYTHONUNBUFFERED', '1')
    _train(sys.argv[1])
