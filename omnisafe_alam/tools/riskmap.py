"""Risk maps (the paper's Fig. 6): the learned multiplier lambda(x) and F_hat(x) over the arena.

For a finished run, the environment is rebuilt from the run's config, the agent is placed at
every point of a position grid (with a given heading and world-frame velocity), and the
observation the policy would see there is computed by Safety-Gymnasium itself from the simulator
state (sensors and lidar, ``task.obs()``). The run's multiplier network and ``F_hat`` (its
policy and twin cost critics, with 64 Monte Carlo actions for a smooth picture) are evaluated on
those observations and drawn as heatmaps with the hazards, goal, vases, buttons and boundaries on
top. The agent is coasting (zero actuation); other joints (a car's wheels) keep their reset state.

    omnisafe-alam riskmap RUN_DIR [RUN_DIR ...] --velocity 0,0 --velocity 1,0 --out map.png

Beside the PNG, ``map.csv`` gives one row per run and column: over the map's cost-free positions
(between the walls, outside every hazard), the share the run calls feasible (``F_hat <= d``) and
the multiplier's quantiles there. At rest (velocity 0) every cost-free position lies in the
maximal feasible region (standing still is safe for ever); ``F_hat`` judges the run's own policy
from there, so the share at rest says how much of what could be safe the run's policy and critics
claim as safe: a low share is a conservative (or unsafe) policy, or an over-estimating critic.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from omnisafe_alam.tools.runs import LoadedRun, load_run

__all__ = ['ArenaProbe', 'RiskMapError', 'cost_free_mask', 'grid_observations', 'map_summary', 'riskmap']

NAVIGATION = re.compile(r'^Safety(Point|Car)(Goal|Button|Circle)\d+-v\d+$')
LIMIT_ENV = 'StatewiseLimit-v0'


class RiskMapError(ValueError):
    """The run or task cannot be mapped over positions."""


def _check_env(env_id: str) -> None:
    if env_id == LIMIT_ENV or NAVIGATION.match(env_id):
        return
    raise RiskMapError(
        f'risk maps place the agent on a grid of arena positions; that makes sense for the '
        f'navigation tasks Safety{{Point,Car}}{{Goal,Button,Circle}}N-v0 and for {LIMIT_ENV}, '
        f'not for {env_id}',
    )


def _env_of(run_dir: Path) -> str:
    config = run_dir / 'config.json'
    if not config.exists():
        raise RiskMapError(f'{run_dir} is not a run directory: it has no config.json')
    return str(json.loads(config.read_text(encoding='utf-8'))['env_id'])


def _yaw(quat: np.ndarray) -> float:
    w, x, y, z = quat
    return float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z)))


def _rot2(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


#: how far :meth:`ArenaProbe.observe` moves a state whose lidar bearing rounds to a full turn
NUDGE = 1e-7


@dataclass
class Obstacle:
    """Something to draw: a kind, a centre and a radius (or a wall's x/y position)."""

    kind: str
    x: float
    y: float
    size: float


class ArenaProbe:
    """A Safety-Gymnasium navigation task whose agent can be put anywhere.

    Args:
        env_id: a navigation task id.
        layout_seed: seed of the reset that fixes the hazards' and goal's layout.
        env_cfgs: the run's ``env_cfgs`` (keyword arguments of ``safety_gymnasium.make``).
    """

    def __init__(self, env_id: str, layout_seed: int = 0, env_cfgs: dict[str, Any] | None = None) -> None:
        import mujoco
        import safety_gymnasium

        _check_env(env_id)
        if env_id == LIMIT_ENV:
            raise RiskMapError(f'{LIMIT_ENV} has no arena; it is mapped over its 1-D state')
        self._mujoco = mujoco
        self.env = safety_gymnasium.make(env_id, **(env_cfgs or {}))
        self.env.reset(seed=layout_seed)
        self.task = self.env.unwrapped.task
        model = self.task.model
        body = model.body('agent')
        joints = [model.joint(i) for i in range(body.jntadr[0], body.jntadr[0] + body.jntnum[0])]
        self._free = int(joints[0].type[0]) == int(mujoco.mjtJoint.mjJNT_FREE)
        if self._free:
            self._qpos, self._qvel = int(joints[0].qposadr[0]), int(joints[0].dofadr[0])
        else:  # Point: slide x, slide y, hinge z, relative to the body's placed pose
            names = [j.name for j in joints[:3]]
            if names != ['x', 'y', 'z']:
                raise RiskMapError(f'unexpected agent joints {names}; expected a free joint or x, y, z')
            self._qpos_idx = [int(j.qposadr[0]) for j in joints[:3]]
            self._qvel_idx = [int(j.dofadr[0]) for j in joints[:3]]
            self._p0 = np.array(model.body_pos[body.id][:2])
            self._yaw0 = _yaw(model.body_quat[body.id])

    @property
    def extent(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the task's placement area."""
        x0, y0, x1, y1 = self.task.placements_conf.extents
        return float(x0), float(y0), float(x1), float(y1)

    def place(self, x: float, y: float, heading: float, vx: float, vy: float, omega: float = 0.0) -> None:
        """Put the agent at world ``(x, y)`` facing ``heading`` (rad) with world velocity."""
        data = self.task.data
        if self._free:
            data.qpos[self._qpos : self._qpos + 2] = (x, y)
            data.qpos[self._qpos + 3 : self._qpos + 7] = (np.cos(heading / 2), 0.0, 0.0, np.sin(heading / 2))
            data.qvel[self._qvel : self._qvel + 6] = (vx, vy, 0.0, 0.0, 0.0, omega)
        else:
            back = _rot2(-self._yaw0)
            data.qpos[self._qpos_idx[:2]] = back @ (np.array([x, y]) - self._p0)
            data.qpos[self._qpos_idx[2]] = heading - self._yaw0
            data.qvel[self._qvel_idx[:2]] = back @ np.array([vx, vy])
            data.qvel[self._qvel_idx[2]] = omega
        data.ctrl[:] = 0.0  # coasting: no actuation
        self._mujoco.mj_forward(self.task.model, data)
        if not np.allclose(self.task.agent.pos[:2], (x, y), atol=1e-6):
            raise RiskMapError(f'placing the agent at {(x, y)} put it at {self.task.agent.pos[:2]}')

    def observe(self, x: float, y: float, heading: float, vx: float, vy: float, omega: float = 0.0) -> np.ndarray:
        """The flattened observation Safety-Gymnasium returns with the agent in that state.

        Safety-Gymnasium's lidar takes an object's bearing ``% 2 pi`` and indexes ``bearing /
        bin_size``: a bearing of ``-1e-17`` (an object straight ahead, seen through a rotation
        matrix with rounding error) becomes exactly ``2 pi`` and indexes one bin past the end.
        Such a state is observed ``NUDGE`` beside itself (the lidar is continuous there).
        """
        for dx, dy in ((0.0, 0.0), (0.0, NUDGE), (0.0, -NUDGE), (NUDGE, 0.0), (-NUDGE, 0.0)):
            self.place(x + dx, y + dy, heading, vx, vy, omega)
            try:
                return np.asarray(self.task.obs(), dtype=np.float32)
            except IndexError:
                continue
        raise RiskMapError(f"Safety-Gymnasium's observation fails at {(x, y)} heading {heading} and {NUDGE} beside it")

    def obstacles(self) -> list[Obstacle]:
        """Hazards, goal, vases, pillars, buttons, gremlins, the circle and the walls."""
        out: list[Obstacle] = []
        for group in (self.task._geoms, self.task._free_geoms, self.task._mocaps):  # noqa: SLF001
            for name, obj in group.items():
                if name == 'circle':
                    out.append(Obstacle('circle', 0.0, 0.0, float(obj.radius)))
                    continue
                if name == 'sigwalls':
                    for i in range(obj.num):
                        axis = 'wall_x' if i < 2 else 'wall_y'
                        out.append(Obstacle(axis, obj.locate_factor * (1 if i % 2 == 0 else -1), 0.0, 0.0))
                    continue
                positions = np.atleast_2d(np.asarray(obj.pos, dtype=float))
                for pos in positions:
                    out.append(Obstacle(name, float(pos[0]), float(pos[1]), float(getattr(obj, 'size', 0.1) or 0.1)))
        return out

    def close(self) -> None:
        self.env.close()


def cost_free_mask(xs: np.ndarray, ys: np.ndarray, obstacles: list[Obstacle]) -> np.ndarray:
    """``(len(ys), len(xs))`` booleans: where an agent standing still pays no position cost.

    Safety-Gymnasium's position costs: beyond a wall (``|x| > wall``, and ``|y|`` for the y
    walls) and inside a hazard (distance ``< size``; at the edge the cost ``size - dist`` is 0).
    Contact costs (vases, pillars, gremlins) depend on contact, not position, and are not counted.
    """
    x, y = np.meshgrid(np.asarray(xs, dtype=float), np.asarray(ys, dtype=float))
    free = np.ones(x.shape, dtype=bool)
    for ob in obstacles:
        if ob.kind == 'wall_x':
            free &= np.abs(x) <= abs(ob.x)
        elif ob.kind == 'wall_y':
            free &= np.abs(y) <= abs(ob.x)
        elif ob.kind == 'hazards':
            free &= np.hypot(x - ob.x, y - ob.y) >= ob.size
    return free


def map_summary(values: dict[str, np.ndarray], free: np.ndarray, threshold: float) -> dict[str, float]:
    """Over the cost-free positions ``free``: the share with risk ``<= threshold`` (``F_hat``,
    ``G`` or ALGD's ``Qbar_c``), the risk's median there and over the costly positions, and the multiplier's
    10th/50th/90th percentiles (NaN for what the run lacks)."""
    if not free.any():
        raise RiskMapError('the map has no cost-free position to summarise')
    risk = values.get('F_hat', values.get('G', values.get('Qbar_c')))
    nan = float('nan')
    out = {
        'cost_free_points': float(free.sum()),
        'feasible_share': float(np.mean(risk[free] <= threshold)) if risk is not None else nan,
        # does the estimate rank risk even where its level is off? its median on each side
        'risk_median_free': float(np.median(risk[free])) if risk is not None else nan,
        'risk_median_costly': float(np.median(risk[~free])) if risk is not None and (~free).any() else nan,
    }
    lam = values.get('lambda')
    for q in (10, 50, 90):
        out[f'lambda_q{q}'] = float(np.percentile(lam[free], q)) if lam is not None else nan
    return out


def grid_observations(
    probe: ArenaProbe,
    resolution: int,
    heading: float,
    velocity: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observations on a ``resolution x resolution`` grid over the arena: ``(H, W, obs_dim)``."""
    x0, y0, x1, y1 = probe.extent
    xs, ys = np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution)
    obs = np.stack([np.stack([probe.observe(x, y, heading, *velocity) for x in xs]) for y in ys])
    return xs, ys, obs


#: Monte Carlo actions for F_hat on maps: more than training's K=5, for a smooth picture
MAP_K = 64


def _evaluate(run: LoadedRun, obs: np.ndarray) -> dict[str, np.ndarray]:
    flat = run.normalize(torch.as_tensor(obs.reshape(-1, obs.shape[-1])))
    out: dict[str, np.ndarray] = {}
    torch.manual_seed(0)
    with torch.no_grad():
        if run.multiplier is not None:
            out['lambda'] = run.multiplier(flat).numpy().reshape(obs.shape[:-1])
        if run.cost_critic is not None:
            out['F_hat'] = run.f_hat(flat, k=MAP_K).numpy().reshape(obs.shape[:-1])
        if run.feasibility_critic is not None:  # SAC-FPI's CDF
            out['G'] = run.risk(flat, k=MAP_K).numpy().reshape(obs.shape[:-1])
        if run.cost_ensemble is not None:  # ALGD's pessimistic ensemble value, against h
            out['Qbar_c'] = run.risk(flat, k=MAP_K).numpy().reshape(obs.shape[:-1])
    return out


_STYLE = {
    'hazards': dict(color='royalblue', fill=False, lw=1.5),
    'goal': dict(color='limegreen', fill=False, lw=2.0),
    'vases': dict(color='cyan', fill=False, lw=1.0),
    'pillars': dict(color='gray', fill=False, lw=1.0),
    'buttons': dict(color='orange', fill=False, lw=1.5),
    'gremlins': dict(color='purple', fill=False, lw=1.0),
    'circle': dict(color='limegreen', fill=False, lw=1.5, ls='--'),
}


def _draw_obstacles(ax: Any, obstacles: list[Obstacle]) -> None:
    from matplotlib.patches import Circle

    for ob in obstacles:
        if ob.kind == 'wall_x':
            ax.axvline(ob.x, color='gold', lw=2)
        elif ob.kind == 'wall_y':
            ax.axhline(ob.x, color='gold', lw=2)
        else:
            ax.add_patch(Circle((ob.x, ob.y), ob.size, **_STYLE.get(ob.kind, dict(color='white', fill=False))))


def _plot_limit(runs: list[LoadedRun], out: Path) -> Path:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    from omnisafe_alam.envs.limit import optimal_multiplier

    x = torch.linspace(-1.0, 1.0, 201)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for run in runs:
        values = _evaluate(run, x.reshape(-1, 1).numpy())
        label = f'{run.algo} ({run.checkpoint.name})'
        if 'lambda' in values:
            axes[0].plot(x, values['lambda'], label=label)
        if 'F_hat' in values:
            axes[1].plot(x, values['F_hat'], label=label)
    d = float(runs[0].cfgs['alam_cfgs']['d'])
    axes[0].step(x, optimal_multiplier(x, d), where='mid', color='black', ls='--', label='lambda* (closed form)')
    axes[1].axhline(d, color='black', ls='--', label=f'd = {d}')
    axes[0].set_title('multiplier lambda(x)')
    axes[1].set_title('F_hat(x)')
    for ax in axes:
        ax.set_xlabel('state x')
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def riskmap(
    run_dirs: list[Path],
    out: Path,
    velocities: list[tuple[float, float]] | None = None,
    headings: list[float] | None = None,
    resolution: int = 41,
    layout_seed: int = 0,
    checkpoint: str | None = None,
    plot: bool = True,
) -> Path:
    """Write a PNG: one row per run and quantity (lambda, F_hat; SAC-FPI: G), one column per state
    setting; and beside it (same name, ``.csv``) each run's :func:`map_summary` per setting.

    Args:
        run_dirs: finished runs of one environment (e.g. a SACALaM and a SACLagNet run).
        out: the PNG to write.
        velocities: world-frame agent velocities ``(vx, vy)`` in m/s, one column each.
        headings: agent headings in degrees (0 = east), crossed with ``velocities``.
        resolution: grid points per axis.
        layout_seed: reset seed that fixes where the hazards and the goal are.
        checkpoint: checkpoint file name (default: each run's newest).
        plot: False writes only the CSV (for many runs, e.g. every seed), and returns its path.
    """
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    if not run_dirs:
        raise RiskMapError('give at least one run directory')
    env_ids = {_env_of(Path(path)) for path in run_dirs}
    if len(env_ids) != 1:
        raise RiskMapError(f'side-by-side maps need runs of one environment, got {sorted(env_ids)}')
    (env_id,) = env_ids
    _check_env(env_id)
    runs = [load_run(path, checkpoint) for path in run_dirs]
    for run in runs:
        if run.multiplier is None and run.cost_critic is None and run.feasibility_critic is None and run.cost_ensemble is None:
            raise RiskMapError(f'run {run.run_dir} ({run.algo}) has no multiplier, cost critics or CDF critics')
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if env_id == LIMIT_ENV:
        return _plot_limit(runs, out)
    if resolution < 2:
        raise RiskMapError(f'resolution must be >= 2, got {resolution}')

    settings = [(h, v) for h in (headings or [0.0]) for v in (velocities or [(0.0, 0.0)])]
    probe = ArenaProbe(env_id, layout_seed, runs[0].cfgs.get('env_cfgs') or None)
    try:
        grids = [grid_observations(probe, resolution, np.deg2rad(h), v) for h, v in settings]
        obstacles = probe.obstacles()
        extent = probe.extent
    finally:
        probe.close()

    rows = []  # (run, quantity, [map per setting])
    summary = []
    for run in runs:
        maps = [_evaluate(run, obs) for _, _, obs in grids]
        for (heading, vel), (xs, ys, _), values in zip(settings, grids, maps):
            stats = map_summary(values, cost_free_mask(xs, ys, obstacles), run.risk_threshold)
            summary.append({'run': str(run.run_dir), 'algo': run.algo, 'seed': run.cfgs.get('seed'),
                            'checkpoint': run.checkpoint.name,
                            'heading': heading, 'vx': vel[0], 'vy': vel[1], **stats})
        for quantity in ('lambda', 'F_hat', 'G', 'Qbar_c'):
            if quantity in maps[0]:
                rows.append((run, quantity, [m[quantity] for m in maps]))
    if not plot:
        csv = out.with_suffix('.csv')
        pd.DataFrame(summary).to_csv(csv, index=False, float_format='%.4g')
        return csv
    fig, axes = plt.subplots(
        len(rows), len(settings), figsize=(3.6 * len(settings) + 1, 3.6 * len(rows)), squeeze=False,
        constrained_layout=True,
    )
    for r, (run, quantity, maps) in enumerate(rows):
        vmax = max(float(np.max(m)) for m in maps) or 1.0
        for c, ((heading, vel), values) in enumerate(zip(settings, maps)):
            ax = axes[r][c]
            image = ax.imshow(values, origin='lower', extent=(extent[0], extent[2], extent[1], extent[3]),
                              cmap='magma', vmin=0.0, vmax=vmax)
            xs, ys, _ = grids[c]
            level = run.risk_threshold
            if quantity in ('F_hat', 'G', 'Qbar_c') and values.min() < level < values.max():
                # the boundary the algorithm acts on: F_hat = d (SAC-FPI: G = p_f)
                ax.contour(xs, ys, values, levels=[level], colors='cyan', linewidths=1.0)
            _draw_obstacles(ax, obstacles)
            ax.set_xlim(extent[0], extent[2])
            ax.set_ylim(extent[1], extent[3])
            ax.set_aspect('equal')
            speed = float(np.hypot(*vel))
            ax.set_title(f'{run.algo} {quantity}\nheading {heading:g} deg, v=({vel[0]:g},{vel[1]:g}) |v|={speed:.2g}', fontsize=8)
            ax.tick_params(labelsize=6)
        fig.colorbar(image, ax=list(axes[r]), fraction=0.02, pad=0.01)
    fig.suptitle(
        f'{env_id} (layout seed {layout_seed}); blue: hazards, green: goal/circle, gold: walls;'
        ' cyan: F_hat = d (G = p_f, Qbar_c = h), feasible on its low side',
        fontsize=9,
    )
    fig.savefig(out, dpi=110, bbox_inches='tight')
    plt.close(fig)
    pd.DataFrame(summary).to_csv(out.with_suffix('.csv'), index=False, float_format='%.4g')
    return out
