"""Full training state: save it, find it, check it, and resume a run from it.

OmniSafe's ``torch_save/epoch-N.pt`` keeps what evaluation needs (the actor, here also the cost
critics and the multiplier). A *full* checkpoint, ``state/step-N.pt`` beside it in the run
directory, keeps everything training needs to continue as if never stopped:

- every network with its target, every optimizer and learning-rate scheduler, SAC's ``log_alpha``,
  the dual state (rho, lambda) and the algorithm's counters (update count, policy steps of the dual
  cycle, the last dual-cycle statistics);
- the position in the training loop (epoch and sample step; an interrupted run stops mid-epoch)
  and the time already trained;
- torch (and CUDA), numpy and Python RNG states;
- the replay buffer's filled part (``checkpoint_cfgs.save_buffer``; its size is printed);
- the environments: the adapter's current observation and episode counters, OmniSafe's wrapper
  state (time limit, observation / reward / cost normalisers) and, for environments that can
  give it (the plugin's known-answer tasks), the simulator state and RNG. Safety-Gymnasium cannot
  save its simulator mid-episode: after a resume its episode in progress restarts from a fresh
  reset (seeded from the run's seed and position) and is not logged; everything else is restored;
- the logger's position: rows written, the windows behind windowed means, the previous row of
  delta keys.

Files hold tensors and plain containers only, so ``torch.load(weights_only=True)`` reads them.
:func:`resume` continues a run in its own directory (``omnisafe-alam resume RUN_DIR``).
"""

from __future__ import annotations

import copy

import contextlib
import csv
import json
import os
import random
import re
import sys
from collections import deque
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

__all__ = [
    'FORMAT',
    'STATE_DIR',
    'CheckpointError',
    'Resume',
    'build_resumed',
    'config_differences',
    'env_state',
    'list_states',
    'load_env_state',
    'load_state_file',
    'newest_state',
    'resume',
    'resuming',
    'save_state_file',
]

FORMAT = 'omnisafe-alam-state'
VERSION = 1
STATE_DIR = 'state'
_NAME = re.compile(r'^step-(\d+)\.pt$')
#: config keys that may differ between a checkpoint and the run it continues
RESUMABLE_CHANGES = ('train_cfgs.total_steps', 'train_cfgs.epochs', 'train_cfgs.device', 'exp_increment_cfgs')


#: keys added to a key group after runs were made, with the value that trains as those runs did:
#: a run whose config.json predates a key resumes with that value (and says so)
ADDED_KEYS: dict[tuple[str, str], Any] = {
    ('alam_cfgs', 'cost_critic_floor'): 0.0,
    ('alam_cfgs', 'cost_critic_min_slope'): 0.0,
    ('alam_cfgs', 'reward_critic_layer_norm'): False,
    ('alam_cfgs', 'cost_gamma'): 0.0,
    ('alam_cfgs', 'cost_critic_hidden_sizes'): [],
    ('alam_cfgs', 'cost_critic_action_noise'): 0.0,
    ('alam_cfgs', 'dual_feasible_gain'): 1.0,
    # the diffusion actor's settings (unused by runs made before it: they are gaussian_sac)
    ('model_cfgs', 'diffusion'): {
        'steps': 5, 'sigma_min': 0.01, 'sigma_max': 1.0, 'time_embed_dim': 16,
        'score_coef': 0.1, 'score_samples': 4, 'beta': 1.0,
    },
}


def fill_added_keys(config: dict[str, Any]) -> list[str]:
    """Give a run config that predates a key of :data:`ADDED_KEYS` its old-behaviour value, in
    place; returns ``group.key=value`` for each key filled in."""
    added = []
    for (group, key), value in ADDED_KEYS.items():
        if isinstance(config.get(group), dict) and key not in config[group]:
            config[group][key] = copy.deepcopy(value)
            added.append(f'{group}.{key}={value}')
    return added


class CheckpointError(RuntimeError):
    """A full checkpoint is missing, unreadable, foreign or does not match its run."""


# ---------------------------------------------------------------------------------- files
def state_path(run_dir: str | Path, env_steps: int) -> Path:
    """Where the full checkpoint taken after ``env_steps`` environment steps lives."""
    return Path(run_dir) / STATE_DIR / f'step-{env_steps}.pt'


def list_states(run_dir: str | Path) -> list[Path]:
    """The run's full checkpoints, oldest first (by the step count in their names)."""
    folder = Path(run_dir) / STATE_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def newest_state(run_dir: str | Path) -> Path:
    """The newest full checkpoint of a run; :class:`CheckpointError` when there is none."""
    run_dir = Path(run_dir)
    if not (run_dir / 'config.json').is_file():
        raise CheckpointError(f'{run_dir} is not a run directory (no config.json)')
    states = list_states(run_dir)
    if not states:
        raise CheckpointError(
            f'no full checkpoint ({STATE_DIR}/step-N.pt) in {run_dir}: the run was trained '
            'without checkpoint_cfgs.save_state, by an older version, or by another algorithm',
        )
    return states[-1]


def save_state_file(path: Path, state: dict[str, Any], keep_last: int) -> int:
    """Write ``state`` atomically (temporary file, then rename); keep the newest ``keep_last``.

    Returns the file's size in bytes.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    torch.save(state, tmp)
    os.replace(tmp, path)
    for old in list_states(path.parent.parent)[:-keep_last]:
        old.unlink(missing_ok=True)
    return path.stat().st_size


def load_state_file(path: str | Path, map_location: str | torch.device = 'cpu') -> dict[str, Any]:
    """Read a full checkpoint (``weights_only``), refusing foreign or damaged files by name."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f'checkpoint {path} does not exist')
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds for a damaged file
        raise CheckpointError(
            f'checkpoint {path} cannot be read ({type(error).__name__}: {error}); it may be '
            'truncated (killed while copying?) or not a torch file. Older checkpoints: '
            f'{[p.name for p in list_states(path.parent.parent) if p != path]}',
        ) from None
    if not isinstance(state, dict) or state.get('format') != FORMAT:
        raise CheckpointError(f'{path} is not an omnisafe-alam full checkpoint (format {FORMAT!r})')
    if state.get('version') != VERSION:
        raise CheckpointError(f"{path} has format version {state.get('version')}; this code reads {VERSION}")
    return state


def _flatten(tree: Any, prefix: str = '') -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for key, value in tree.items():
            out.update(_flatten(value, f'{prefix}{key}.'))
        return out if out or not prefix else {prefix[:-1]: {}}
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def config_differences(a: dict[str, Any], b: dict[str, Any], ignore: tuple[str, ...] = ()) -> list[str]:
    """Dotted keys whose values differ between two config trees (or exist in only one)."""
    flat_a, flat_b = _flatten(a), _flatten(b)
    keys = sorted(set(flat_a) | set(flat_b))
    return [
        key
        for key in keys
        if not any(key == i or key.startswith(i + '.') for i in ignore) and flat_a.get(key, '<missing>') != flat_b.get(key, '<missing>')
    ]


# ---------------------------------------------------------------------------------- RNG
def rng_state() -> dict[str, Any]:
    """torch (and CUDA), numpy and Python RNG states as tensors and plain containers."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        'torch': torch.get_rng_state(),
        'numpy': [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        'python': random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state['cuda'] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore :func:`rng_state` (CUDA only where both sides have it)."""
    torch.set_rng_state(state['torch'].cpu())
    kind, keys, pos, has_gauss, cached = state['numpy']
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss = state['python']
    random.setstate((version, tuple(internal), gauss))
    if 'cuda' in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state['cuda']])


# ---------------------------------------------------------------------------------- buffer
def buffer_state(buf: Any) -> dict[str, Any]:
    """The filled part of OmniSafe's off-policy buffer, with its pointer."""
    size = buf._size
    return {
        'ptr': buf._ptr,
        'size': size,
        'max_size': buf._max_size,
        'data': {key: value[:size].clone() for key, value in buf.data.items()},
    }


def load_buffer_state(buf: Any, state: dict[str, Any]) -> None:
    """Refill a freshly built buffer from :func:`buffer_state`."""
    if state['max_size'] != buf._max_size:
        raise CheckpointError(f"replay buffer size {buf._max_size} differs from the checkpoint's {state['max_size']}")
    size = state['size']
    for key, value in state['data'].items():
        if key not in buf.data or buf.data[key][:size].shape != value.shape:
            raise CheckpointError(f'replay buffer field {key!r} does not match the checkpoint')
        buf.data[key][:size] = value.to(buf.data[key].device)
    buf._ptr, buf._size = state['ptr'], size


# ---------------------------------------------------------------------------------- envs
def _layers(env: Any) -> list[Any]:
    """An OmniSafe wrapper stack, outermost first, down to the environment itself."""
    from omnisafe.envs.core import Wrapper

    layers = [env]
    while isinstance(layers[-1], Wrapper):
        layers.append(layers[-1]._env)
    return layers


_NORMALIZERS = ('_obs_normalizer', '_reward_normalizer', '_cost_normalizer')


def env_state(env: Any) -> dict[str, Any]:
    """State of a wrapper stack: time limits, normalisers and the environment's own state.

    ``restorable`` says whether the innermost environment could give its state (it has
    ``state_dict``); without it only the wrappers' state is kept.
    """
    layers = _layers(env)
    out: dict[str, Any] = {'classes': [type(layer).__name__ for layer in layers], 'layers': []}
    for layer in layers[:-1]:
        item: dict[str, Any] = {}
        if hasattr(layer, '_time') and hasattr(layer, '_time_limit'):
            item['time'] = int(layer._time)
        for name in _NORMALIZERS:
            norm = getattr(layer, name, None)
            if norm is not None:
                item[name] = {'buffers': norm.state_dict(), 'first': bool(norm._first)}
        out['layers'].append(item)
    inner = layers[-1]
    out['restorable'] = hasattr(inner, 'state_dict')
    if out['restorable']:
        out['env'] = inner.state_dict()
    return out


def load_env_state(env: Any, state: dict[str, Any]) -> bool:
    """Restore :func:`env_state` into a freshly built stack; returns whether the env itself was."""
    layers = _layers(env)
    if [type(layer).__name__ for layer in layers] != state['classes']:
        raise CheckpointError(
            f"environment wrappers {[type(layer).__name__ for layer in layers]} differ from the "
            f"checkpoint's {state['classes']}",
        )
    for layer, item in zip(layers[:-1], state['layers']):
        if 'time' in item:
            layer._time = item['time']
        for name in _NORMALIZERS:
            if name in item:
                norm = getattr(layer, name)
                norm.load_state_dict(item[name]['buffers'])
                norm._first = item[name]['first']
    if state['restorable']:
        layers[-1].load_state_dict(state['env'])
    return bool(state['restorable'])


# ---------------------------------------------------------------------------------- logger
def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, (np.generic, torch.Tensor)) else value


def logger_state(logger: Any) -> dict[str, Any]:
    """Rows written, the stored values (windows and this epoch's so far) and the last row."""
    return {
        'epoch': logger._epoch,
        'first_row': logger._first_row,
        'data': {key: [_plain(v) for v in values] for key, values in logger._data.items()},
        'current_row': {key: _plain(v) for key, v in logger._current_row.items()},
    }


def load_logger_state(logger: Any, state: dict[str, Any], optional: tuple[str, ...] = ()) -> list[str]:
    """Restore :func:`logger_state` into a logger whose keys are registered.

    Keys in ``optional`` (plain keys, no min/max or delta) that the checkpoint lacks (a run
    begun before the plugin logged them) are unregistered, so ``progress.csv`` keeps the columns
    its header names; returns them. Any other difference is an error."""
    dropped = sorted(key for key in optional if key in logger._data and key not in state['data'])
    for key in dropped:
        for table in (logger._data, logger._headers_windows, logger._headers_minmax, logger._headers_delta, logger._current_row):
            table.pop(key, None)
    missing = sorted(set(state['data']) ^ set(logger._data))
    if missing:
        raise CheckpointError(f'logged keys differ from the checkpoint: {missing}')
    logger._epoch = state['epoch']
    logger._first_row = state['first_row']
    for key, values in state['data'].items():
        window = logger._headers_windows[key]
        logger._data[key] = deque(values, maxlen=window) if window is not None else list(values)
    logger._current_row.update(state['current_row'])
    return dropped


def _open_resumed_logger(run_dir: Path, rows: int, config: Any, use_tensorboard: bool) -> Any:
    """An OmniSafe :class:`Logger` on an existing run directory, positioned after ``rows`` rows.

    ``progress.csv`` is cut back to its header and the first ``rows`` rows (a killed run may have
    written epochs after its newest checkpoint) at the first write, then appended to; TensorBoard's writer purges
    the events of those epochs (``purge_step``) so no epoch appears twice.
    """
    from omnisafe.common.logger import Logger
    from rich.console import Console
    from torch.utils.tensorboard import SummaryWriter

    progress = run_dir / 'progress.csv'
    lines = progress.read_text(encoding='utf-8').splitlines(keepends=True) if progress.is_file() else []
    if len(lines) < rows + 1 and rows > 0:
        raise CheckpointError(
            f'{progress} has {max(len(lines) - 1, 0)} rows but the checkpoint was taken after {rows}: '
            'the checkpoint does not belong to this run',
        )

    logger = Logger.__new__(Logger)
    logger._hms_time = run_dir.name
    logger._log_dir = str(run_dir)
    logger._maste_proc = True
    logger._console = Console()
    logger._output_file = _CutThenAppend(progress, ''.join(lines[: rows + 1]) if rows else '')
    logger._csv_writer = csv.writer(logger._output_file)
    logger._epoch = rows
    logger._first_row = rows == 0
    logger._what_to_save = None
    logger._data = {}
    logger._headers_windows = {}
    logger._headers_minmax = {}
    logger._headers_delta = {}
    logger._current_row = {}
    logger._config = config
    logger.save_config(config)
    logger._use_tensorboard = use_tensorboard
    logger._use_wandb = False
    if use_tensorboard:
        logger._tensorboard_writer = SummaryWriter(log_dir=str(run_dir / 'tb'), purge_step=rows + 1)
    logger.log(f'Resuming: appending to {progress} after row {rows}', 'cyan', bold=True)
    return logger


class _CutThenAppend:
    """``progress.csv`` opened for appending after its first rows, cut only at the first write.

    So a resume that fails while loading (or is interrupted before its first epoch) leaves the
    run's rows as they were.
    """

    def __init__(self, path: Path, keep: str) -> None:
        self.name = str(path)
        self._path, self._keep = path, keep
        self._file: Any = None

    def write(self, text: str) -> int:
        if self._file is None:
            self._path.write_text(self._keep, encoding='utf-8')
            self._file = open(self._path, encoding='utf-8', mode='a')  # noqa: SIM115
        return self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


# ---------------------------------------------------------------------------------- resume
@dataclass
class Resume:
    """What the algorithm being built needs to continue a run instead of starting one."""

    run_dir: Path
    state: dict[str, Any]
    path: Path


_RESUMING: ContextVar[Resume | None] = ContextVar('omnisafe_alam_resuming', default=None)


def resuming() -> Resume | None:
    """The resume in progress (set by :func:`resume` while it builds the algorithm), if any."""
    return _RESUMING.get()


@contextlib.contextmanager
def resumed_logger(resume_info: Resume, config: Any) -> Iterator[None]:
    """Make OmniSafe's ``DDPG._init_log`` open the run's own directory instead of a new one."""
    from omnisafe.algorithms.off_policy import ddpg

    original = ddpg.Logger

    def factory(**kwargs: Any) -> Any:
        return _open_resumed_logger(
            resume_info.run_dir,
            resume_info.state['logger']['epoch'],
            config,
            kwargs.get('use_tensorboard', True),
        )

    ddpg.Logger = factory  # type: ignore[assignment]
    try:
        yield
    finally:
        ddpg.Logger = original  # type: ignore[assignment]


def resume(
    run_dir: str | Path,
    total_steps: int | None = None,
    checkpoint: str | Path | None = None,
    device: str | None = None,
) -> tuple[float, float, float]:
    """Continue a run in its own directory from its newest (or the named) full checkpoint.

    :func:`build_resumed`, then its ``learn()``; returns OmniSafe's final (EpRet, EpCost, EpLen).
    """
    return build_resumed(run_dir, total_steps, checkpoint, device).learn()


def build_resumed(
    run_dir: str | Path,
    total_steps: int | None = None,
    checkpoint: str | Path | None = None,
    device: str | None = None,
) -> Any:
    """The run's algorithm, rebuilt from its config and loaded with a full checkpoint.

    Args:
        run_dir: the run directory (``.../seed-000-<time>``, holding ``config.json``).
        total_steps: a new total (> the steps already trained) to extend a run; default: the
            run's own.
        checkpoint: a checkpoint file to resume from instead of the newest.
        device: train on this device instead of the run's (e.g. ``cpu`` for a GPU run).

    Raises:
        CheckpointError: no / damaged / foreign checkpoint, or a config that differs from the
            checkpoint's (naming the keys). Nothing in the run directory is changed before every
            check has passed.
    """
    from omnisafe.algorithms import registry
    from omnisafe.utils.config import Config

    # The plugin's algorithms are in the registry: this module is reached through the package,
    # whose import registers them.

    run_dir = Path(run_dir).resolve()
    path = Path(checkpoint) if checkpoint is not None else newest_state(run_dir)
    if not path.is_absolute() and not path.exists():
        path = run_dir / STATE_DIR / path
    state = load_state_file(path)
    config = json.loads((run_dir / 'config.json').read_text(encoding='utf-8'))
    saved = state['config']
    if (config.get('algo'), config.get('env_id')) != (saved.get('algo'), saved.get('env_id')):
        raise CheckpointError(
            f"{path} was trained as {saved.get('algo')} on {saved.get('env_id')}, but {run_dir} "
            f"is {config.get('algo')} on {config.get('env_id')}",
        )
    added = fill_added_keys(config)
    fill_added_keys(saved)
    if added:
        print(
            f'{run_dir.name} was trained before {", ".join(added)} existed; it resumes with '
            'that value, which trains as the run did',
            file=sys.stderr,
        )
    differences = config_differences(config, saved, RESUMABLE_CHANGES)
    if differences:
        raise CheckpointError(
            f'the config of {run_dir} differs from the one {path.name} was trained with, in '
            f'{differences}; restore config.json (or start a new run)',
        )
    done_steps = int(state['position']['env_steps'])
    steps_per_epoch = int(config['algo_cfgs']['steps_per_epoch'])
    if total_steps is not None:
        if total_steps % steps_per_epoch:
            raise CheckpointError(f'--total-steps {total_steps} must be a multiple of algo_cfgs.steps_per_epoch={steps_per_epoch}')
        if total_steps <= done_steps:
            raise CheckpointError(f'--total-steps {total_steps} must exceed the {done_steps} steps already trained')
        config['train_cfgs']['total_steps'] = total_steps
        config['train_cfgs']['epochs'] = total_steps // steps_per_epoch
    elif done_steps >= int(config['train_cfgs']['total_steps']):
        raise CheckpointError(
            f"{run_dir} has finished its {config['train_cfgs']['total_steps']} steps; pass "
            '--total-steps N to train it further',
        )
    if device is not None:
        config['train_cfgs']['device'] = device
    cfgs = Config.dict2config(config)

    if cfgs.train_cfgs.device == 'cpu':
        torch.set_num_threads(cfgs.train_cfgs.torch_threads)
    else:
        torch.set_num_threads(1)
        torch.cuda.set_device(cfgs.train_cfgs.device)
    os.environ['OMNISAFE_DEVICE'] = cfgs.train_cfgs.device
    if device is not None or cfgs.train_cfgs.device != 'cpu':
        state = load_state_file(path, map_location=cfgs.train_cfgs.device)
    token = _RESUMING.set(Resume(run_dir, state, path))
    try:
        agent = registry.get(cfgs.algo)(env_id=cfgs.env_id, cfgs=cfgs)
    finally:
        _RESUMING.reset(token)
    agent._load_training_state(state)
    return agent
