"""Turn finished runs (a benchmark grid, or any tree of OmniSafe run directories) into the
paper's comparison: learning curves (Fig. 3 style: a thin line per seed, the mean bold, a 95%
band only from :data:`MIN_SEEDS_FOR_BAND` seeds on), the normalised return-vs-cost summary over
tasks from the last 10% of training (Fig. 2 style), the training dynamics of SAC-ALaM beside
SAC-LagNet per seed (Fig. 4 style, ``stability.png``, when either ran) and a markdown table.

    omnisafe-alam compare runs/benchmark/my-grid --out runs/compare --eval-episodes 3

A root may also be an earlier comparison's ``per_run.csv``: its rows join the table, the summary
and ``tradeoff.png`` as they are (no curves: their runs need not exist any more), so runs trained
in different sessions, or deleted since, are compared with new ones
(``omnisafe-alam compare old/per_run.csv runs/new-grid --out runs/compare``). Each ``(env_id,
algo, seed)`` may appear once; relabel the ``algo`` column of a CSV to keep two settings of one
algorithm apart. Runs are labelled by their settings where these matter (:func:`setting_labels`):
a plugin run away from what ships for its task, ``SACALaM (alam_cfgs:cost_gamma=0.95)``, and the
runs of a grid that varied a key.

``tradeoff.png`` puts every seed of every algorithm on the two axes the paper's claim is about,
return against cost: in training (the last 10% of epochs) and, where ``--eval-episodes`` ran,
for the deterministic final policy (unsafe steps per episode).

What the table reports, per task and algorithm (mean and 95% t-interval over seeds, last 10% of
epochs; intervals of quantities that cannot be negative are cut at zero):

- ``return`` and ``ep_cost``: OmniSafe's ``Metrics/EpRet`` / ``Metrics/EpCost`` (undiscounted
  episode sums). Episode cost is what OmniSafe's baselines constrain (``cost_limit`` 25 per
  episode); the state-wise variants constrain ``F_hat(x) <= d`` at every state instead.
- ``unsafe_steps``: steps with cost > 0 per episode, what state-wise safety is about. The
  plugin's algorithms log it during training (``Metrics/EpUnsafeSteps``); OmniSafe's do not, so
  with ``--eval-episodes N`` every algorithm's final policy is also rolled out deterministically
  for N episodes and ``eval_unsafe_steps`` / ``eval_return`` / ``eval_cost`` are reported for all
  alike. That needs the final policy on disk: OmniSafe's algorithms save only every
  ``save_model_freq`` epochs, so grids set it to a divisor of the epoch count; a run whose newest
  checkpoint is older than its last epoch gets empty eval columns and a warning.
- ``multiplier``: the batch-mean multiplier (state-wise variants), or the scalar Lagrange
  multiplier (SACLag, SACPID, ASAC); ``rho`` where there is one.
- ``ep_cost_std_2nd_half`` / ``multiplier_tv_2nd_half``: oscillation over the second half of the
  run (:func:`omnisafe_alam.tools.runs.stability_metrics`).
- ``cost_settled``: how many seeds brought the episode cost down for good (at or below
  ``settle_cost``, 25 = OmniSafe's ``cost_limit``, from some epoch to the end), and the median
  step at which they did (per run: ``cost_settled_at`` in per_run.csv, NaN for never;
  :func:`omnisafe_alam.tools.runs.settled_at`).
"""

from __future__ import annotations

import copy
import json
import warnings
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from omnisafe_alam.tools.runs import markdown_table, settled_at, stability_metrics

__all__ = [
    'CompareError',
    'RunRecord',
    'collect_runs',
    'departures',
    'flatten_config',
    'setting_labels',
    'compare',
    'bound_columns',
    'cfg_from_columns',
    'config_bounds',
    'format_interval',
    'interval95',
    'load_per_run',
    'mean_ci95',
    'normalised_summary',
    't_critical_95',
    'tradeoff_points',
]

# two-sided 95% Student-t critical values, df = 1..30
_T95 = [
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
]


def t_critical_95(df: int) -> float:
    """Two-sided 95% critical value of Student's t (1.96 beyond 30 degrees of freedom)."""
    if df < 1:
        return float('nan')
    return _T95[df - 1] if df <= len(_T95) else 1.96


def mean_ci95(values: Any) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval (half-width NaN for a single value)."""
    arr = np.asarray(values, dtype=float)
    arr = arr[~np.isnan(arr)]
    if arr.size == 0:
        return float('nan'), float('nan')
    if arr.size == 1:
        return float(arr[0]), float('nan')
    sem = arr.std(ddof=1) / np.sqrt(arr.size)
    return float(arr.mean()), float(t_critical_95(arr.size - 1) * sem)


#: per-run quantities that cannot be negative: their intervals are cut at zero
NONNEGATIVE = frozenset(
    {
        'ep_cost', 'unsafe_steps', 'multiplier', 'multiplier_max', 'rho', 'ep_cost_std_2nd_half',
        'multiplier_tv_2nd_half', 'eval_cost', 'eval_unsafe_steps', 'Metrics/EpCost',
        'Metrics/EpUnsafeSteps',
    },
)

#: the table's columns in the order a new run's row has them
METRIC_ORDER = (
    'return', 'ep_cost', 'unsafe_steps', 'multiplier', 'multiplier_max', 'rho', 'ep_cost_std_2nd_half',
    'multiplier_tv_2nd_half', 'eval_return', 'eval_cost', 'eval_unsafe_steps',
)

#: fewest seeds for which the figures draw a 95% band (below it: the seeds' own lines only)
MIN_SEEDS_FOR_BAND = 5

#: the paper's Fig. 4 pair: the state-wise multiplier with and without ALaM
STABILITY_ALGOS = ('SACALaM', 'SACLagNet')


#: metrics bounded by config keys of the plugin's runs, as ``(lower, upper)``: the multiplier
#: by ``multiplier_max``, the penalty coefficient by ``rho_init`` and ``rho_max``; their intervals
#: are cut there, as costs' are at 0
CONFIG_BOUNDS = {
    'multiplier': (None, ('alam_cfgs', 'multiplier_max')),
    'multiplier_max': (None, ('alam_cfgs', 'multiplier_max')),
    'rho': (('alam_cfgs', 'rho_init'), ('alam_cfgs', 'rho_max')),
}


class CompareError(ValueError):
    """A bad argument to :func:`compare` (the command prints it without a traceback)."""


def interval95(
    values: Any, nonnegative: bool = False, lower: float | None = None, upper: float | None = None,
) -> tuple[float, float, float]:
    """Mean and 95% t-interval ``(mean, low, high)`` over seeds; ``low`` is cut at 0 for a
    quantity that cannot be negative (and at ``lower``), ``high`` at ``upper`` for one that cannot
    exceed it (an interval is a statement about where the mean can be). NaN bounds for a single value."""
    mean, half = mean_ci95(values)
    low, high = mean - half, mean + half
    if nonnegative and not np.isnan(low):
        low = max(low, 0.0)
    if lower is not None and not np.isnan(low):
        low = max(low, lower)
    if upper is not None and not np.isnan(high):
        high = min(high, upper)
    return mean, low, high


def bound_columns(cfg: dict[str, Any]) -> dict[str, float]:
    """The config values of :data:`CONFIG_BOUNDS` a run has, as per_run.csv columns
    (``cfg:alam_cfgs:multiplier_max``, ...), so a comparison that joins its row later (from the
    CSV alone) still cuts its intervals there."""
    paths = {side for sides in CONFIG_BOUNDS.values() for side in sides if side is not None}
    return {f'cfg:{group}:{key}': float((cfg.get(group) or {})[key])
            for group, key in sorted(paths) if (cfg.get(group) or {}).get(key) is not None}


def cfg_from_columns(row: pd.Series) -> dict[str, Any]:
    """The inverse of :func:`bound_columns` for one per_run.csv row (empty cells left out)."""
    cfg: dict[str, Any] = {}
    for column, value in row.items():
        if isinstance(column, str) and column.startswith('cfg:') and not pd.isna(value):
            _, group, key = column.split(':', 2)
            cfg.setdefault(group, {})[key] = float(value)
    return cfg


def config_bounds(cfgs: list[dict[str, Any]], metric: str) -> tuple[float | None, float | None]:
    """``(lower, upper)``: the range ``metric`` can take in any of these runs (their configs);
    None on a side not bounded by config in all of them."""
    bounds: list[float | None] = []
    for side, pick in zip(CONFIG_BOUNDS.get(metric, (None, None)), (min, max)):
        values = [(cfg.get(side[0]) or {}).get(side[1]) for cfg in cfgs] if side is not None else []
        bounds.append(pick(float(v) for v in values) if values and None not in values else None)
    return bounds[0], bounds[1]


def format_interval(
    values: Any, nonnegative: bool = False, lower: float | None = None, upper: float | None = None,
) -> str:
    """``mean [low, high]`` (or the mean alone for one seed, ``n/a`` for none)."""
    mean, low, high = interval95(values, nonnegative, lower, upper)
    if np.isnan(mean):
        return 'n/a'
    if np.isnan(low):
        return f'{mean:.2f}'
    return f'{mean:.2f} [{low:.2f}, {high:.2f}]'


@dataclass
class RunRecord:
    """One finished run: where it is, what it was, and its progress table."""

    path: Path
    algo: str
    env_id: str
    seed: int
    progress: pd.DataFrame
    cfg: dict[str, Any] = field(default_factory=dict)  # the run's config.json


def collect_runs(roots: list[Path]) -> list[RunRecord]:
    """Every run directory (``progress.csv`` beside ``config.json``) under the given roots, except
    those an ``omnisafe-alam grid`` set aside (under a ``*.incomplete-N`` directory)."""
    records = []
    for root in roots:
        for progress in sorted(Path(root).rglob('progress.csv')):
            config = progress.parent / 'config.json'
            if not config.exists() or any('.incomplete-' in part for part in progress.relative_to(root).parts):
                continue
            cfg = json.loads(config.read_text(encoding='utf-8'))
            frame = pd.read_csv(progress)
            if frame.empty:
                continue
            records.append(RunRecord(progress.parent, cfg['algo'], cfg['env_id'], int(cfg.get('seed', 0)), frame, cfg))
    if not records:
        raise FileNotFoundError(f'no finished runs (progress.csv + config.json) under {roots}')
    return [replace(r, algo=label) for r, label in zip(records, setting_labels(records))]


#: config keys that tell runs apart without being a setting: which seed, where it logged, and
#: OmniSafe's record of what a grid varied (``exp_increment_cfgs``, whose keys repeat elsewhere)
_NOT_SETTINGS = ('seed', 'exp_increment_cfgs', 'log_dir', 'exp_name')


def flatten_config(cfg: dict[str, Any], prefix: str = '') -> dict[str, str]:
    """``{'algo_cfgs:alpha': '0.001', ...}``: every leaf of a run's config, keyed by its path
    (OmniSafe's ``section:key`` form) and valued by its JSON text, so lists compare too."""
    flat: dict[str, str] = {}
    for key, value in cfg.items():
        if isinstance(value, dict):
            flat.update(flatten_config(value, f'{prefix}{key}:'))
        else:
            flat[f'{prefix}{key}'] = json.dumps(value, sort_keys=True)
    return flat


def _same_value(a: str | None, b: str | None) -> bool:
    """Whether two JSON texts of config values agree (numbers by value: ``10`` is ``10.0``)."""
    if a is None or b is None:
        return a == b
    x, y = json.loads(a), json.loads(b)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (x, y))
    return float(x) == float(y) if numbers else x == y


@lru_cache(maxsize=None)
def _shipped_settings(algo: str, env_id: str) -> tuple[tuple[str, str], ...]:
    """The plugin algorithm's own settings group (``alam_cfgs``, ``fpi_cfgs``, ``algd_cfgs``) as it
    ships for the task (its YAML's defaults and the task's section), flattened; empty for any
    other algorithm (OmniSafe's own: their runs are labelled only by what a grid varied)."""
    from omnisafe_alam.glue.defaults import SETTINGS_GROUP, load_defaults

    group = SETTINGS_GROUP.get(algo)
    if group is None:
        return ()
    shipped = load_defaults(algo, env_id).get(group) or {}
    return tuple(sorted(flatten_config({group: dict(shipped)}).items()))


def departures(record: RunRecord, trained: dict[str, str] | None = None) -> dict[str, str]:
    """The keys of the run's own settings group whose value differs from what ships for its task,
    ``{'alam_cfgs:cost_gamma': '0.95'}`` (a run made before a key existed counts with the value it
    trained with, :data:`~omnisafe_alam.glue.checkpoint.ADDED_KEYS`). ``trained``: the run's
    :func:`_trained_config`, where the caller has it already."""
    shipped = dict(_shipped_settings(record.algo, record.env_id))
    if not shipped:
        return {}
    flat = _trained_config(record) if trained is None else trained
    return {k: flat[k] for k in sorted(shipped) if k in flat and not _same_value(flat[k], shipped[k])}


def _trained_config(record: RunRecord) -> dict[str, str]:
    """The run's config, flattened, with the keys it predates at the values it trained with."""
    from omnisafe_alam.glue.checkpoint import fill_added_keys

    cfg = copy.deepcopy(record.cfg)
    fill_added_keys(cfg)
    return flatten_config(cfg)


def setting_labels(records: list[RunRecord]) -> list[str]:
    """The ``algo`` label of each run: its algorithm, then in brackets
    - the plugin's own settings (``alam_cfgs`` ...) where the run departs from what ships for its
      task: ``SACALaM (alam_cfgs:cost_gamma=0.95)``, so a run at another setting is never read as
      the shipped algorithm, even alone;
    - where runs of one algorithm on one task share a seed (a grid that varied a key, e.g.
      ``algo_cfgs:alpha: [0.0001, 0.001]``), every config value that differs among them:
      ``SACALaM (algo_cfgs:alpha=0.001)``.
    Runs at the shipped settings with nothing varied keep the bare name (and runs whose settings
    all agree are then refused as given twice)."""
    labels = [r.algo for r in records]
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(records):
        groups.setdefault((r.env_id, r.algo), []).append(i)
    for members in groups.values():
        flats = [_trained_config(records[i]) for i in members]
        own = [departures(records[i], flat) for i, flat in zip(members, flats)]
        varied: list[str] = []
        seeds = [records[i].seed for i in members]
        if len(set(seeds)) < len(seeds):
            varied = sorted(
                key for key in set().union(*flats)
                if not any(part in _NOT_SETTINGS for part in key.split(':'))
                and len({flat.get(key) for flat in flats}) > 1
            )
        for i, flat, away in zip(members, flats, own):
            shown = sorted(set(varied) | set(away))
            if not shown:
                continue
            value = {**{k: flat.get(k) for k in varied}, **away}
            settings = ', '.join(f'{k}={json.loads(value[k]) if value[k] is not None else None}' for k in shown)
            labels[i] = f'{records[i].algo} ({settings})'
    return labels


#: a helper column: whether a row's cost_settled_at is known (an earlier table may lack it)
_SETTLED_KNOWN = '_settled_known'

#: columns an earlier comparison's per_run.csv must have to join a new one
PER_RUN_REQUIRED = ('env_id', 'algo', 'seed', 'steps', 'return', 'ep_cost')


def load_per_run(paths: list[Path]) -> pd.DataFrame:
    """The rows of earlier comparisons' ``per_run.csv`` files, one frame (no rows for no paths).
    A missing file or a missing column (:data:`PER_RUN_REQUIRED`) is an error naming it."""
    frames = []
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f'{path}: no such per-run table')
        frame = pd.read_csv(path)
        missing = [c for c in PER_RUN_REQUIRED if c not in frame.columns]
        if missing:
            raise CompareError(
                f'{path} lacks the column(s) {", ".join(missing)}: a per-run table as compare writes it '
                f'(per_run.csv) needs {", ".join(PER_RUN_REQUIRED)}',
            )
        # a table without cost_settled_at does not say whether its runs settled: unknown, not never
        frames.append(frame.assign(**{_SETTLED_KNOWN: 'cost_settled_at' in frame.columns}))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(PER_RUN_REQUIRED))


def _check_unique_runs(per_run: pd.DataFrame) -> None:
    twice = per_run[per_run.duplicated(['env_id', 'algo', 'seed'], keep=False)]
    if not twice.empty:
        names = sorted({f'{r.algo} on {r.env_id}, seed {int(r.seed)}' for r in twice.itertuples()})
        raise CompareError(
            f'run(s) given twice: {"; ".join(names)}. To compare two settings of one algorithm, '
            "relabel the 'algo' column of one per_run.csv (e.g. 'SACLagNet (noise 0)')",
        )


def _tail(frame: pd.DataFrame, frac: float) -> pd.DataFrame:
    return frame.iloc[-max(1, int(np.ceil(len(frame) * frac))) :]


def _final_stats(record: RunRecord, frac: float) -> dict[str, float]:
    tail = _tail(record.progress, frac)
    stats = {
        'return': tail['Metrics/EpRet'].mean(),
        'ep_cost': tail['Metrics/EpCost'].mean(),
    }
    optional = {
        'unsafe_steps': 'Metrics/EpUnsafeSteps',
        'multiplier': 'Metrics/MultiplierMean',
        'multiplier_max': 'Metrics/MultiplierMax',
        'rho': 'Metrics/Rho',
    }
    for name, key in optional.items():
        stats[name] = tail[key].mean() if key in tail else float('nan')
    if np.isnan(stats['multiplier']) and 'Metrics/LagrangeMultiplier' in tail:
        stats['multiplier'] = tail['Metrics/LagrangeMultiplier'].mean()
    stability = stability_metrics(record.progress)
    stats['ep_cost_std_2nd_half'] = stability['ep_cost_std']
    stats['multiplier_tv_2nd_half'] = stability.get('multiplier_tv', float('nan'))
    return {k: float(v) for k, v in stats.items()}


def evaluate_unsafe_steps(record: RunRecord, episodes: int) -> dict[str, float]:
    """Roll out the run's final policy deterministically; count steps with cost > 0."""
    import torch
    from omnisafe.envs.core import make

    from omnisafe_alam.tools.runs import final_checkpoint, load_policy

    checkpoint = final_checkpoint(record.path)
    epochs = len(record.progress)
    if int(checkpoint.stem.split('-')[-1]) < epochs:
        # OmniSafe's own algorithms save only every save_model_freq epochs: evaluating an older
        # (possibly untrained) policy would misreport the run
        warnings.warn(
            f'{record.path}: newest checkpoint {checkpoint.name} is older than the final epoch '
            f'{epochs}; set logger_cfgs:save_model_freq to a divisor of the epoch count. '
            'Its eval_* columns are left empty.',
            stacklevel=2,
        )
        return {'eval_return': float('nan'), 'eval_cost': float('nan'), 'eval_unsafe_steps': float('nan')}
    cfg = record.cfg or json.loads((record.path / 'config.json').read_text(encoding='utf-8'))
    env = make(record.env_id, num_envs=1, **(cfg.get('env_cfgs') or {}))
    params = torch.load(checkpoint, map_location='cpu', weights_only=True)
    actor, normalizer = load_policy(cfg, params, env.observation_space, env.action_space)
    low = torch.as_tensor(env.action_space.low)
    high = torch.as_tensor(env.action_space.high)
    rets, costs, unsafe = [], [], []
    for episode in range(episodes):
        obs, _ = env.reset(seed=10_000 + episode)
        ret = cost_sum = bad = 0.0
        done = False
        while not done:
            with torch.no_grad():
                inp = normalizer.normalize(obs) if normalizer is not None else obs
                act = actor.predict(inp.float(), deterministic=True)
            # OmniSafe trains in a [-1, 1] action box (ActionScale wrapper)
            act = low + (act + 1.0) * 0.5 * (high - low)
            obs, reward, cost, terminated, truncated, _ = env.step(act)
            ret += float(reward)
            cost_sum += float(cost)
            bad += float(float(cost) > 0)
            done = bool(terminated) or bool(truncated)
        rets.append(ret)
        costs.append(cost_sum)
        unsafe.append(bad)
    env.close()
    return {
        'eval_return': float(np.mean(rets)),
        'eval_cost': float(np.mean(costs)),
        'eval_unsafe_steps': float(np.mean(unsafe)),
    }


def normalised_summary(per_run: pd.DataFrame) -> pd.DataFrame:
    """Fig. 2: per-task min-max normalisation of final return and cost, then mean and 95% CI
    of each algorithm over tasks and seeds (``per_run`` has env_id, algo, return, ep_cost)."""
    frame = per_run.copy()
    for column in ('return', 'ep_cost'):
        low = frame.groupby('env_id')[column].transform('min')
        span = frame.groupby('env_id')[column].transform('max') - low
        frame[f'norm_{column}'] = np.where(span > 0, (frame[column] - low) / span.where(span > 0, 1), 0.5)
    rows = []
    for algo, group in frame.groupby('algo', sort=False):
        ret, ret_ci = mean_ci95(group['norm_return'])
        cost, cost_ci = mean_ci95(group['norm_ep_cost'])
        rows.append({'algo': algo, 'norm_return': ret, 'norm_return_ci': ret_ci,
                     'norm_cost': cost, 'norm_cost_ci': cost_ci, 'runs': len(group)})
    return pd.DataFrame(rows)


def _curves(records: list[RunRecord], out: Path, min_band: int = MIN_SEEDS_FOR_BAND) -> Path:
    """Episode cost and return over training: one thin line per seed, the mean bold, a 95% band
    only with at least ``min_band`` seeds (never below zero for cost)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    envs = sorted({r.env_id for r in records})
    algos = list(dict.fromkeys(r.algo for r in records))
    colours = {algo: f'C{i % 10}' for i, algo in enumerate(algos)}
    keys = (('Metrics/EpCost', 'episode cost'), ('Metrics/EpRet', 'episode return'))
    fig, axes = plt.subplots(len(keys), len(envs), figsize=(max(8.0, 6 * len(envs)), 7.5), squeeze=False)
    for col, env_id in enumerate(envs):
        for algo in algos:
            runs = [r for r in records if r.env_id == env_id and r.algo == algo]
            if not runs:
                continue
            length = min(len(r.progress) for r in runs)
            steps = runs[0].progress['TotalEnvSteps'].to_numpy()[:length]
            for row, (key, _) in enumerate(keys):
                ax = axes[row][col]
                for r in runs:
                    ax.plot(r.progress['TotalEnvSteps'], r.progress[key], color=colours[algo], lw=0.6, alpha=0.35)
                values = np.stack([r.progress[key].to_numpy()[:length] for r in runs])
                ax.plot(steps, values.mean(axis=0), color=colours[algo], lw=1.8, label=f'{algo} (n={len(runs)})')
                if len(runs) >= min_band:
                    bands = np.array([interval95(values[:, i], key in NONNEGATIVE)[1:] for i in range(length)])
                    ax.fill_between(steps, bands[:, 0], bands[:, 1], color=colours[algo], alpha=0.15)
        axes[0][col].set_title(env_id)
        for row, (key, label) in enumerate(keys):
            axes[row][col].set_ylabel(label)
            if key in NONNEGATIVE:
                axes[row][col].set_ylim(bottom=0)
        axes[-1][col].set_xlabel('environment steps')
    axes[0][0].legend(fontsize=8)
    fig.suptitle(
        f'thin: each seed; bold: mean over seeds'
        + (f'; band: 95% t-interval (shown from {min_band} seeds on)' if min_band else ''),
        fontsize=9,
    )
    fig.tight_layout()
    path = out / 'learning_curves.png'
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _stability_plot(records: list[RunRecord], out: Path, algos: tuple[str, ...] = STABILITY_ALGOS) -> Path | None:
    """Fig. 4: each algorithm's training dynamics side by side, one line per seed: episode return,
    episode cost and the batch-mean multiplier (with its 90th percentile dashed)."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    columns = [
        (env_id, algo)
        for env_id in sorted({r.env_id for r in records})
        for algo in algos
        if any(r.env_id == env_id and r.algo == algo for r in records)
    ]
    if not columns:
        return None
    rows = (('Metrics/EpRet', 'episode return'), ('Metrics/EpCost', 'episode cost'), ('Metrics/MultiplierMean', 'multiplier (batch mean)'))
    fig, axes = plt.subplots(len(rows), len(columns), figsize=(max(8.0, 4.5 * len(columns)), 8), squeeze=False, sharey='row')
    for col, (env_id, algo) in enumerate(columns):
        runs = [r for r in records if r.env_id == env_id and r.algo == algo]
        for i, r in enumerate(sorted(runs, key=lambda r: r.seed)):
            for row, (key, _) in enumerate(rows):
                if key not in r.progress:
                    continue
                ax = axes[row][col]
                ax.plot(r.progress['TotalEnvSteps'], r.progress[key], color=f'C{i}', lw=1.0, label=f'seed {r.seed}')
                if key == 'Metrics/MultiplierMean' and 'Metrics/MultiplierQ90' in r.progress:
                    ax.plot(r.progress['TotalEnvSteps'], r.progress['Metrics/MultiplierQ90'], color=f'C{i}', lw=0.7, ls='--')
        axes[0][col].set_title(f'{algo}\n{env_id}', fontsize=10)
        axes[-1][col].set_xlabel('environment steps')
    for row, (_, label) in enumerate(rows):
        axes[row][0].set_ylabel(label)
        if row:
            axes[row][0].set_ylim(bottom=0)
    axes[0][0].legend(fontsize=8)
    fig.suptitle('training dynamics per seed (multiplier: solid batch mean, dashed 90th percentile)', fontsize=9)
    fig.tight_layout()
    path = out / 'stability.png'
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


#: the two panels of tradeoff.png: (name, cost column, return column)
TRADEOFF_PANELS = (
    ('training, last 10% of epochs', 'ep_cost', 'return'),
    ('deterministic final policy', 'eval_unsafe_steps', 'eval_return'),
)


def tradeoff_points(per_run: pd.DataFrame, cost: str, ret: str) -> pd.DataFrame:
    """Per ``(env_id, algo)``: the seeds that have both ``cost`` and ``ret``, and their means
    (columns ``env_id, algo, seeds, cost, return``); no row for a pair with none."""
    rows = []
    if cost not in per_run or ret not in per_run:
        return pd.DataFrame(columns=['env_id', 'algo', 'seeds', 'cost', 'return'])
    both = per_run.dropna(subset=[cost, ret])
    for (env_id, algo), group in both.groupby(['env_id', 'algo'], sort=False):
        rows.append({'env_id': env_id, 'algo': algo, 'seeds': len(group),
                     'cost': float(group[cost].mean()), 'return': float(group[ret].mean())})
    return pd.DataFrame(rows, columns=['env_id', 'algo', 'seeds', 'cost', 'return'])


def _tradeoff_plot(per_run: pd.DataFrame, out: Path) -> Path:
    """Return against cost, one point per seed (its number beside it) and the mean of each
    algorithm large: per task a row, training and (where evaluated) the deterministic policy."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    envs = list(dict.fromkeys(per_run['env_id']))
    algos = list(dict.fromkeys(per_run['algo']))
    colours = {algo: f'C{i % 10}' for i, algo in enumerate(algos)}
    panels = [p for p in TRADEOFF_PANELS if not tradeoff_points(per_run, p[1], p[2]).empty]
    fig, axes = plt.subplots(len(envs), len(panels), figsize=(6.0 * len(panels), 4.8 * len(envs)), squeeze=False)
    for row, env_id in enumerate(envs):
        runs = per_run[per_run['env_id'] == env_id]
        for col, (title, cost, ret) in enumerate(panels):
            ax = axes[row][col]
            for _, point in tradeoff_points(runs, cost, ret).iterrows():
                colour = colours[point['algo']]
                seeds = runs[runs['algo'] == point['algo']].dropna(subset=[cost, ret])
                ax.scatter(seeds[cost], seeds[ret], color=colour, s=18, alpha=0.6)
                for seed, x, y in zip(seeds['seed'], seeds[cost], seeds[ret]):
                    ax.annotate(str(int(seed)), (x, y), fontsize=6, xytext=(2, 2), textcoords='offset points', color=colour)
                ax.scatter([point['cost']], [point['return']], color=colour, s=110, marker='D', edgecolors='black',
                           label=f"{point['algo']} (n={point['seeds']})")
            ax.set_xlim(left=max(ax.get_xlim()[0], 0.0))  # costs and unsafe steps are never negative
            ax.set_xlabel('episode cost' if cost == 'ep_cost' else 'unsafe steps per episode')
            ax.set_ylabel('episode return')
            ax.set_title(f'{env_id}: {title}', fontsize=10)
    # one legend below the panels, so that long labels (a run's settings) never cover a point
    named = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            named.setdefault(label, handle)
    ncol = 1 if max(map(len, named), default=0) > 45 else min(3, max(len(named), 1))
    rows = -(-len(named) // ncol)
    height = fig.get_figheight()
    bottom = min(0.5, (0.25 * rows + 0.15) / height)
    fig.legend(list(named.values()), list(named), loc='lower center', ncol=ncol, fontsize=8, frameon=False)
    fig.suptitle('small: each seed (its number beside it); large: the mean over seeds. Up and left is better.',
                 fontsize=9)
    fig.tight_layout(rect=(0.0, bottom, 1.0, 1.0))
    path = out / 'tradeoff.png'
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _clipped_bar(mean: float, half: float) -> np.ndarray:
    """Asymmetric error bar ``[[below], [above]]`` of ``mean +- half`` cut to [0, 1]."""
    half = 0.0 if np.isnan(half) else half
    return np.array([[mean - max(mean - half, 0.0)], [min(mean + half, 1.0) - mean]])


def _summary_plot(summary: pd.DataFrame, out: Path) -> Path:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for row in summary.itertuples(index=False):
        # normalised values lie in [0, 1]: so do the bars
        xerr = _clipped_bar(row.norm_cost, row.norm_cost_ci)
        yerr = _clipped_bar(row.norm_return, row.norm_return_ci)
        ax.errorbar(row.norm_cost, row.norm_return, xerr=xerr, yerr=yerr, fmt='o', capsize=3,
                    label=f'{row.algo} (n={row.runs})')
    ax.invert_xaxis()  # right = safer, as in the paper's Fig. 2
    ax.set_xlabel('normalised episode cost (inverted)')
    ax.set_ylabel('normalised episode return')
    ax.set_title('last 10% of training, min-max per task')
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = out / 'normalised_summary.png'
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def compare(
    roots: list[Path], out: Path, last_frac: float = 0.1, eval_episodes: int = 0, settle_cost: float = 25.0,
) -> dict[str, Path]:
    """Write learning_curves.png, normalised_summary.png, tradeoff.png, comparison.md and
    per_run.csv. A root ending in ``.csv`` is an earlier comparison's per_run.csv, whose rows join
    (:func:`load_per_run`); the curves are drawn from the run directories alone."""
    if not 0.0 < last_frac <= 1.0:
        raise CompareError(f'last_frac must be in (0, 1], got {last_frac}')
    if not settle_cost >= 0.0:
        raise CompareError(f'settle_cost must be >= 0 (an episode cost), got {settle_cost}')
    tables = [Path(root) for root in roots if Path(root).suffix == '.csv']
    earlier = load_per_run(tables)
    dirs = [Path(root) for root in roots if Path(root).suffix != '.csv']
    records = collect_runs(dirs) if dirs else []
    if not records and earlier.empty:
        raise FileNotFoundError(f'no runs and no per-run rows in {roots}')
    # refused before any policy is evaluated (minutes of work)
    _check_unique_runs(pd.concat([
        pd.DataFrame([(r.env_id, r.algo, r.seed) for r in records], columns=['env_id', 'algo', 'seed']),
        earlier[['env_id', 'algo', 'seed']],
    ], ignore_index=True))
    rows = []
    for record in records:
        row = {
            'env_id': record.env_id,
            'algo': record.algo,
            'seed': record.seed,
            # the run's final TotalEnvSteps: what budget each row stands for
            'steps': int(record.progress['TotalEnvSteps'].iloc[-1]),
            # wall-clock seconds of training (OmniSafe's Time/Total; a resumed run's included)
            'train_s': float(record.progress['Time/Total'].iloc[-1]) if 'Time/Total' in record.progress else float('nan'),
            **_final_stats(record, last_frac),
            'cost_settled_at': settled_at(record.progress, settle_cost),
            **bound_columns(record.cfg),
            _SETTLED_KNOWN: True,  # a new run's empty cost_settled_at means never
        }
        if eval_episodes > 0:
            row.update(evaluate_unsafe_steps(record, eval_episodes))
        rows.append(row)
    # rows 0..len(records)-1 are records[i]; the earlier tables' rows follow, their bounds from
    # their cfg: columns
    per_run = pd.concat([f for f in (pd.DataFrame(rows), earlier) if not f.empty], ignore_index=True)
    cfg_of = [r.cfg for r in records] + [cfg_from_columns(row) for _, row in earlier.iterrows()]
    for column in ('train_s', 'cost_settled_at'):
        if column not in per_run:
            per_run[column] = float('nan')
    out.mkdir(parents=True, exist_ok=True)
    per_run.drop(columns=_SETTLED_KNOWN).to_csv(out / 'per_run.csv', index=False)

    ids = ('env_id', 'algo', 'seed', 'steps', 'train_s', 'cost_settled_at', _SETTLED_KNOWN)
    metrics = [c for c in per_run.columns
               if c not in ids and not c.startswith('cfg:') and pd.api.types.is_numeric_dtype(per_run[c])]
    # a new run's columns in their order, whichever table came first; the rest after them
    metrics.sort(key=lambda c: METRIC_ORDER.index(c) if c in METRIC_ORDER else len(METRIC_ORDER))
    table_rows = []
    for (env_id, algo), group in per_run.groupby(['env_id', 'algo'], sort=False):
        row: dict[str, Any] = {'task': env_id, 'algo': algo, 'seeds': len(group), 'steps': int(group['steps'].min())}
        for metric in metrics:
            cfgs = [cfg_of[i] for i in group.index]
            row[metric] = format_interval(group[metric], metric in NONNEGATIVE, *config_bounds(cfgs, metric))
        known = group[group[_SETTLED_KNOWN].astype(bool)]
        settled = known['cost_settled_at'].dropna()
        row['cost_settled'] = (f'{len(settled)}/{len(known)}' + (f', {settled.median():,.0f}' if len(settled) else '')
                               if len(known) else 'n/a')
        table_rows.append(row)
    summary = normalised_summary(per_run)
    text = [
        '# Comparison',
        '',
        f'Mean and [95% t-interval] over seeds of the last {last_frac:.0%} of training epochs '
        '(cut at 0 for quantities that cannot be negative, and the multiplier and rho at their configured '
        'cap and floor; one seed: the mean alone).',
        '',
        markdown_table(pd.DataFrame(table_rows)),
        '',
        f"Training time: {per_run['train_s'].sum() / 3600:.2f} h of wall clock over {per_run['train_s'].notna().sum()} "
        f"runs ({per_run.loc[per_run['train_s'].notna(), 'steps'].sum():,} environment steps; per run in "
        'per_run.csv, column train_s).',
        '',
        f'cost_settled: seeds whose episode cost came down to {settle_cost:g} or below and stayed there '
        'to the end, and the median step from which it did (per run: cost_settled_at).',
        '',
        '## Normalised over tasks (Fig. 2 style)',
        '',
        markdown_table(summary.round(3)),
        '',
    ]
    (out / 'comparison.md').write_text('\n'.join(text), encoding='utf-8')
    outputs = {
        'table': out / 'comparison.md',
        'per_run': out / 'per_run.csv',
        'summary': _summary_plot(summary, out),
        'tradeoff': _tradeoff_plot(per_run, out),
    }
    if records:
        outputs['curves'] = _curves(records, out)
        stability = _stability_plot(records, out)
        if stability is not None:
            outputs['stability'] = stability
    return outputs
