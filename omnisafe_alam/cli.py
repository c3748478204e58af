"""``omnisafe-alam`` / ``python -m omnisafe_alam``: OmniSafe's CLI with the plugin registered.

Every ``omnisafe`` sub-command (train, benchmark, eval, analyze-grid, ...) is available as is,
plus the plugin's own: ``install-hook`` / ``uninstall-hook``, ``compare``, ``riskmap``, ``steer``, ``bench``,
``grid``, ``resume``.
"""

from __future__ import annotations

import sysconfig
from pathlib import Path

import typer

import omnisafe_alam  # noqa: F401  (registers the algorithms)
import omnisafe_alam_autoload as autoload
from omnisafe.utils.command_app import app as omnisafe_app

app = typer.Typer(help=__doc__, no_args_is_help=True)
app.registered_commands.extend(omnisafe_app.registered_commands)


def _pth_path(site_packages: str | None) -> Path:
    return Path(site_packages or sysconfig.get_paths()['purelib']) / autoload.PTH_NAME


@app.command('install-hook')
def install_hook(
    site_packages: str = typer.Option(None, help='target site-packages (default: this interpreter)'),
) -> None:
    """Write the startup hook so that plain `omnisafe ...` knows the plugin's algorithms."""
    path = _pth_path(site_packages)
    path.write_text(autoload.PTH_LINE, encoding='utf-8')
    typer.echo(f'wrote {path} (set {autoload.ENV_SWITCH}=0 to turn it off)')


@app.command('uninstall-hook')
def uninstall_hook(
    site_packages: str = typer.Option(None, help='target site-packages (default: this interpreter)'),
) -> None:
    """Remove the startup hook."""
    path = _pth_path(site_packages)
    path.unlink(missing_ok=True)
    typer.echo(f'removed {path}')


@app.command('compare')
def compare_runs(
    roots: list[Path] = typer.Argument(
        ..., help='benchmark or log directories holding finished runs, and/or earlier per_run.csv files to join',
    ),
    out: Path = typer.Option(Path('runs/compare'), help='where the PNGs and the table go'),
    last_frac: float = typer.Option(0.1, help='final fraction of epochs averaged for the table'),
    eval_episodes: int = typer.Option(0, help='deterministic episodes per run to count unsafe steps'),
    settle_cost: float = typer.Option(25.0, help='episode cost for cost_settled (OmniSafe cost_limit: 25)'),
) -> None:
    """Learning curves per seed, the normalised summary, the stability panel and a table of runs."""
    from omnisafe_alam.tools.compare import CompareError, compare

    try:
        outputs = compare(roots, out, last_frac=last_frac, eval_episodes=eval_episodes, settle_cost=settle_cost)
    except (CompareError, FileNotFoundError) as error:  # a bad --last-frac, no runs, a missing file
        typer.echo(f'error: {error}', err=True)
        raise typer.Exit(2) from None
    for name, path in outputs.items():
        typer.echo(f'{name}: {path}')
    typer.echo(outputs['table'].read_text(encoding='utf-8'))


def _velocity(text: str) -> tuple[float, float]:
    try:
        vx, vy = (float(v) for v in text.split(','))
    except ValueError:
        raise typer.BadParameter(f'velocity must be "vx,vy" in m/s, got {text!r}') from None
    return vx, vy


@app.command('riskmap')
def riskmap_command(
    run_dirs: list[Path] = typer.Argument(..., help='finished run directories (seed-* folders) of one task'),
    out: Path = typer.Option(Path('riskmap.png'), help='PNG to write'),
    velocity: list[str] = typer.Option(['0,0'], help='world-frame agent velocity "vx,vy" (repeat for columns)'),
    heading: list[float] = typer.Option([0.0], help='agent heading in degrees, 0 = east (repeat for columns)'),
    resolution: int = typer.Option(41, help='grid points per axis'),
    layout_seed: int = typer.Option(0, help='reset seed fixing the hazards and goal layout'),
    checkpoint: str = typer.Option(None, help='checkpoint file name, e.g. epoch-25.pt (default: newest)'),
    plot: bool = typer.Option(True, help='--no-plot: only the CSV beside --out (e.g. for every seed)'),
) -> None:
    """Heatmaps of the learned multiplier lambda(x) and F_hat(x) over the arena (Fig. 6)."""
    from omnisafe_alam.tools.riskmap import RiskMapError, riskmap
    from omnisafe_alam.tools.runs import RunError

    try:
        path = riskmap(
            run_dirs,
            out,
            velocities=[_velocity(v) for v in velocity],
            headings=heading,
            resolution=resolution,
            layout_seed=layout_seed,
            checkpoint=checkpoint,
            plot=plot,
        )
    except (RiskMapError, RunError) as error:  # not a run, a task without an arena, no checkpoint
        typer.echo(f'error: {error}', err=True)
        raise typer.Exit(2) from None
    typer.echo(f'wrote {path}')
    if path.with_suffix('.csv').exists():  # the 1-D limit task has no arena summary
        import pandas as pd

        table = pd.read_csv(path.with_suffix('.csv')).drop(columns=['run'])
        typer.echo(f'over the cost-free positions (wrote {path.with_suffix(".csv")}):')
        typer.echo(table.to_string(index=False, float_format=lambda v: f'{v:.3g}'))


def _critic_run_and_env(run_dir: Path, checkpoint: str | None, why: str) -> tuple:
    """A finished run with twin cost critics and one env of its task, or exit 2 naming the problem
    (warns when the checkpoint is not the run's last)."""
    from omnisafe.envs.core import make

    from omnisafe_alam.tools.runs import RunError, load_run
    from omnisafe_alam.tools.steer import unfinished_note

    try:
        run = load_run(run_dir, checkpoint)
    except RunError as error:
        typer.echo(f'error: {error}', err=True)
        raise typer.Exit(2) from None
    if run.cost_critic is None:
        typer.echo(f'error: {run_dir} ({run.algo}) has no twin cost critics: {why}', err=True)
        raise typer.Exit(2)
    note = unfinished_note(run)
    if note:
        typer.echo(note, err=True)
    return run, make(run.env_id, num_envs=1, **(run.cfgs.get('env_cfgs') or {}))


@app.command('steer')
def steer_command(
    run_dir: Path = typer.Argument(..., help='a finished run (seed-* folder) with twin cost critics'),
    episodes: int = typer.Option(10, help='deterministic evaluation episodes per setting (seeds 10000 + i)'),
    eps: list[float] = typer.Option([0.1, 0.25, 0.5], help='step sizes in the [-1, 1] action box (repeat)'),
    bias: float = typer.Option(0.0, help='added to every policy action first: a positive control that pushes a safe policy'),
    checkpoint: str = typer.Option(None, help='checkpoint file name, e.g. epoch-25.pt (default: newest)'),
) -> None:
    """Does the cost critics' action slope, the penalty's only path to the actor, steer away from cost?

    Deterministic rollouts with every action stepped against grad_a F_hat, beside steps of the same
    size in random directions: return, unsafe steps per episode and F_hat at the visited states.
    """
    from omnisafe_alam.tools.steer import steer_rollouts

    if episodes < 1 or any(e <= 0 for e in eps):
        typer.echo(f'error: need --episodes >= 1 and every --eps > 0, got {episodes} and {eps}', err=True)
        raise typer.Exit(2)
    run, env = _critic_run_and_env(run_dir, checkpoint, 'nothing to steer with')
    typer.echo(f'{run.algo} on {run.env_id}, {run.checkpoint.name}, {episodes} episodes per setting, bias {bias:g}')
    typer.echo(f'{"setting":>14} {"return":>9} {"unsafe/ep":>10} {"F_hat":>7}')
    settings = [(0.0, 'critic', 'policy')] + [(e, d, f'{d} {e:g}') for e in eps for d in ('critic', 'random')]
    for step, direction, name in settings:
        res = steer_rollouts(run, env, episodes, step, direction, bias)
        typer.echo(f'{name:>14} {res.episode_return:9.2f} {res.unsafe_steps:10.1f} {res.f_hat:7.3f}')


@app.command('sensitivity')
def sensitivity_command(
    run_dir: Path = typer.Argument(..., help='a finished run (seed-* folder) with twin cost critics'),
    states: int = typer.Option(100, help='states to branch at along the deterministic episodes (seeds 10000 + i)'),
    stride: int = typer.Option(10, help='branch at every STRIDE-th step of an episode'),
    eps: float = typer.Option(0.5, help='distance of each moved first action in the [-1, 1] action box'),
    gamma: list[float] = typer.Option([0.8, 0.95], help='discounts of F to measure (repeat)'),
    bias: float = typer.Option(0.0, help='added to every policy action (as in steer): brings a safe policy near the hazards'),
    checkpoint: str = typer.Option(None, help='checkpoint file name, e.g. epoch-25.pt (default: newest)'),
    out: Path = typer.Option(None, help='also write every branch (state, candidate, F per discount, Q_c) to this CSV'),
) -> None:
    """How much one action moves the true F, against how much the state does, and whether the
    cost critics know it (branches of the environment, no training).

    At each state the policy's action, that action moved against and along the critics' slope, and
    moved along each action axis are each taken once, then the deterministic policy is followed;
    the realised discounted cost indicator is F. Reads: state_sd / action_sd (F's spread over
    states / over one action), the gains of the best move, of the slope's and of a random one, and
    the critic's correlation with F over states and over actions.
    """
    import numpy as np
    import pandas as pd

    from omnisafe_alam.tools.sensitivity import branch_feasibility, summarize_branches

    if states < 1 or stride < 1 or eps <= 0 or not gamma or any(not 0.0 < g < 1.0 for g in gamma):
        typer.echo(f'error: need --states >= 1, --stride >= 1, --eps > 0 and every --gamma in (0, 1), '
                   f'got {states}, {stride}, {eps} and {gamma}', err=True)
        raise typer.Exit(2)
    run, env = _critic_run_and_env(run_dir, checkpoint, 'nothing to compare with the simulator')
    data = branch_feasibility(run, env, states, gamma, eps=eps, stride=stride, bias=bias)
    typer.echo(f'{run.algo} on {run.env_id}, {run.checkpoint.name}: {states} states, eps {eps:g}, '
               f'bias {bias:g}, {data.f_mc.shape[1]} first actions each (moved {data.moved[:, 1:].mean():.3f} on average)')
    rows = []
    for i, g in enumerate(data.gammas):
        rows.append({'gamma': g, **summarize_branches(data.f_mc[:, :, i], data.q_c)})
    typer.echo(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f'{v:.3f}'))
    if out is not None:
        s, c = np.meshgrid(np.arange(data.f_mc.shape[0]), np.arange(data.f_mc.shape[1]), indexing='ij')
        table = {'state': s.ravel(), 'candidate': c.ravel(), 'moved': data.moved.ravel(), 'q_c': data.q_c.ravel()}
        for i, g in enumerate(data.gammas):
            table[f'f_mc_{g:g}'] = data.f_mc[:, :, i].ravel()
        out.parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(table).to_csv(out, index=False)
        typer.echo(f'wrote {out}')


@app.command('bench')
def bench_command(
    algos: list[str] = typer.Option(
        ['SACLag', 'SACALaM', 'SACLagNet'],
        help='algorithms (repeat); ALGO@group.key=value,... adds config overrides',
    ),
    widths: list[int] = typer.Option([64, 256], help='hidden layer widths (repeat)'),
    device: list[str] = typer.Option(None, help='devices (repeat; default: cpu, and cuda:0 when present)'),
    threads: int = typer.Option(2, help='torch threads'),
    steps: int = typer.Option(200, help='timed steps per round'),
    rounds: int = typer.Option(5, help='interleaved rounds (figures are medians over rounds)'),
) -> None:
    """Gradient and env steps/s against OmniSafe's SACLag, with GFLOP/s against a matmul."""
    from omnisafe_alam.tools.bench import bench, format_table

    typer.echo(format_table(bench(algos, widths, device or None, threads, steps, rounds)))


@app.command('grid')
def grid_command(
    grid_file: Path = typer.Argument(..., help='grid YAML (OmniSafe benchmark format: key: [values])'),
    log_dir: Path = typer.Option(Path('runs/grid'), help='where each run gets its fixed directory'),
    jobs: int = typer.Option(1, help='runs at a time (each uses train_cfgs:torch_threads threads)'),
    dry_run: bool = typer.Option(False, help='only list each run and what would be done'),
    ray: bool = typer.Option(
        False, '--ray', help="run on an existing Ray cluster (pip install 'omnisafe-alam[ray]'); --log-dir must be a path every node sees",
    ),
    address: str = typer.Option(
        None, help='with --ray: the cluster, as Ray spells it (auto, HOST:PORT, ray://HOST:10001; default: $RAY_ADDRESS, else auto)',
    ),
    retries: int = typer.Option(3, help='with --ray: how often a run whose trainer, worker or node failed is retried'),
) -> None:
    """Run a grid, or continue it: finished runs skipped, checkpointed ones resumed."""
    from omnisafe_alam.tools.grid import GridError, run_grid

    if jobs < 1:
        typer.echo(f'error: --jobs must be at least 1, got {jobs}', err=True)
        raise typer.Exit(2)
    if address is not None and not ray:
        typer.echo('error: --address is for --ray (the local grid uses this machine)', err=True)
        raise typer.Exit(2)
    try:
        if ray:
            from omnisafe_alam.tools.cluster import run_grid_ray

            failed = run_grid_ray(grid_file, log_dir, address=address, dry_run=dry_run, echo=typer.echo, retries=retries)
        else:
            failed = run_grid(grid_file, log_dir, jobs=jobs, dry_run=dry_run, echo=typer.echo)
    except GridError as error:
        typer.echo(f'error: {error}', err=True)
        raise typer.Exit(2) from None
    if failed:
        raise typer.Exit(1)


@app.command('resume')
def resume_command(
    run_dir: Path = typer.Argument(..., help='run directory (seed-*/ holding config.json and state/)'),
    total_steps: int = typer.Option(None, help='new total env steps, to extend a finished run'),
    checkpoint: Path = typer.Option(None, help='full checkpoint to start from (default: the newest in state/)'),
    device: str = typer.Option(None, help="train on this device instead of the run's, e.g. cpu"),
) -> None:
    """Continue a killed or finished run in its own directory from a full checkpoint."""
    from omnisafe_alam.glue.checkpoint import CheckpointError, resume

    try:
        ep_ret, ep_cost, ep_len = resume(run_dir, total_steps=total_steps, checkpoint=checkpoint, device=device)
    except CheckpointError as error:
        typer.echo(f'error: {error}', err=True)
        raise typer.Exit(2) from None
    typer.echo(f'finished: EpRet {ep_ret:.3f}, EpCost {ep_cost:.3f}, EpLen {ep_len:.1f} ({run_dir})')


def main() -> None:
    """Console-script entry point."""
    app()
