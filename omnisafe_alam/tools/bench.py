"""Speed benchmark: the plugin's algorithms against OmniSafe's SACLag, in one run, same machine.

For every algorithm, network width and device it builds the algorithm exactly as ``omnisafe
train`` does (``omnisafe.Agent``), fills the replay buffer with random steps, and measures

- **gradient steps/s**: ``_update()`` (one batch: critics, actor, alpha, dual cycles at their
  cadence, Polyak), after a few untimed warm-up steps;
- **env steps/s**: one policy step in the environment plus one ``_update()``, OmniSafe's
  training loop at ``update_cycle = update_iters = 1`` without the per-epoch logging;
- **GFLOP per gradient step**, counted by ``torch.utils.flop_counter`` on one ``_update()``, and
  the achieved GFLOP/s; against it, a float32 ``(2560 x W) @ (W x W)`` matmul measured in the
  same run (the ceiling of dense arithmetic at that width on this device).

Ratios are to SACLag at the same width and device. ``torch.cuda.synchronize()`` brackets every
timed block on CUDA.

    omnisafe-alam bench --algos SACLag SACALaM SACLagNet --widths 64 256 --steps 200
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import torch

__all__ = ['BenchRow', 'bench', 'bench_algo', 'format_table', 'matmul_gflops', 'parse_subject']

ENV_ID = 'SafetyPointGoal1-v0'
RUN_STEPS, RUN_RANDOM = 3000, 500


@dataclass
class BenchRow:
    """One algorithm at one width on one device."""

    algo: str
    width: int
    device: str
    grad_steps_per_s: float
    env_steps_per_s: float
    gflop_per_step: float
    gflops: float
    matmul_gflops: float
    #: projected time of a 3000-step run: 500 random steps, then 2500 policy steps with updates
    run_3000_s: float = float('nan')
    ratio_grad: float = float('nan')
    ratio_env: float = float('nan')
    #: ``run_3000_s`` over SACLag's (the issue's goal: <= 1 at 64 wide, <= 1.3 at 256)
    ratio_run: float = float('nan')


def _sync(device: str) -> None:
    if device.startswith('cuda'):
        torch.cuda.synchronize()


def matmul_gflops(width: int, device: str, batch: int = 2560, repeats: int = 50) -> float:
    """Achieved GFLOP/s of a float32 ``(batch x width) @ (width x width)`` matmul."""
    a = torch.randn(batch, width, device=device)
    b = torch.randn(width, width, device=device)
    for _ in range(5):
        a @ b
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _sync(device)
    seconds = (time.perf_counter() - start) / repeats
    return 2.0 * batch * width * width / seconds / 1e9


def parse_subject(name: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """``ALGO`` or ``ALGO@group.key=value[,group.key=value]``: an algorithm with overrides.

    >>> parse_subject('SACALaM@algo_cfgs.policy_delay=2')
    ('SACALaM', {'algo_cfgs': {'policy_delay': 2}})
    """
    algo, _, spec = name.partition('@')
    overrides: dict[str, dict[str, Any]] = {}
    for item in filter(None, spec.split(',')):
        key, sep, value = item.partition('=')
        group, dot, leaf = key.partition('.')
        if not (sep and dot and group and leaf):
            raise ValueError(f'override {item!r} in {name!r} must look like group.key=value')
        try:
            parsed: Any = int(value)
        except ValueError:
            try:
                parsed = float(value)
            except ValueError:
                parsed = value
        overrides.setdefault(group, {})[leaf] = parsed
    return algo, overrides


def _build(name: str, width: int, device: str, threads: int, log_dir: str, fill: int) -> Any:
    import omnisafe

    import omnisafe_alam

    algo, overrides = parse_subject(name)

    cfgs: dict[str, Any] = {
        'seed': 0,
        'train_cfgs': {'device': device, 'torch_threads': threads, 'total_steps': 2000},
        'algo_cfgs': {'steps_per_epoch': 1000, 'start_learning_steps': 0, 'warmup_epochs': 0},
        'logger_cfgs': {'log_dir': log_dir, 'use_tensorboard': False},
        'model_cfgs': {'actor': {'hidden_sizes': [width, width]}, 'critic': {'hidden_sizes': [width, width]}},
    }
    from omnisafe_alam.glue.defaults import SETTINGS_GROUP

    if SETTINGS_GROUP.get(algo) == 'alam_cfgs':
        cfgs['alam_cfgs'] = {'multiplier_hidden_sizes': [width, width]}
    for group, values in overrides.items():
        cfgs.setdefault(group, {}).update(values)
    inner = omnisafe.Agent(algo, ENV_ID, custom_cfgs=cfgs).agent
    inner._env.rollout(  # noqa: SLF001
        rollout_step=fill,
        agent=inner._actor_critic,  # noqa: SLF001
        buffer=inner._buf,  # noqa: SLF001
        logger=inner._logger,  # noqa: SLF001
        use_rand_action=True,
    )
    inner._epoch = 1  # noqa: SLF001  (past every warm-up gate)
    return inner


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    import io
    import sys

    saved = sys.stdout
    sys.stdout = io.StringIO()
    try:
        yield
    finally:
        sys.stdout = saved


class _Subject:
    """One built algorithm whose steps are timed in rounds (see :func:`bench`)."""

    def __init__(self, algo: str, width: int, device: str, threads: int, log_dir: str) -> None:
        from torch.utils.flop_counter import FlopCounterMode

        with _quiet():
            self.inner = _build(algo, width, device, threads, log_dir, fill=1000)
            self.algo, self.width, self.device = algo, width, device
            inner = self.inner
            for _ in range(10):  # warm-up: allocator, first Adam steps, lazy inits
                inner._update()  # noqa: SLF001
            with FlopCounterMode(display=False) as counter:
                for _ in range(2):  # two steps: OmniSafe's SACLag updates its actor every other one
                    inner._update()  # noqa: SLF001
            # per gradient step: an _update() takes update_iters of them (ALGD's default: 10)
            self.per_update = int(getattr(inner, '_updates_per_phase', 1))
            self.flop_per_step = counter.get_total_flops() / 2 / self.per_update
        self.grad: list[float] = []
        self.env: list[float] = []
        self.random: list[float] = []

    def time_round(self, steps: int) -> None:
        inner = self.inner
        env, agent, buf, logger = inner._env, inner._actor_critic, inner._buf, inner._logger  # noqa: SLF001
        with _quiet():
            _sync(self.device)
            start = time.perf_counter()
            for _ in range(steps):
                inner._update()  # noqa: SLF001
            _sync(self.device)
            self.grad.append((time.perf_counter() - start) / steps / self.per_update)
            start = time.perf_counter()
            for _ in range(steps):
                env.rollout(rollout_step=1, agent=agent, buffer=buf, logger=logger, use_rand_action=False)
                inner._update()  # noqa: SLF001
            _sync(self.device)
            self.env.append((time.perf_counter() - start) / steps)
            start = time.perf_counter()
            for _ in range(steps // 4 or 1):
                env.rollout(rollout_step=1, agent=agent, buffer=buf, logger=logger, use_rand_action=True)
            self.random.append((time.perf_counter() - start) / (steps // 4 or 1))

    def row(self) -> BenchRow:
        grad = statistics.median(self.grad)
        env = statistics.median(self.env)
        random_step = statistics.median(self.random)
        self.inner._env.close()  # noqa: SLF001
        return BenchRow(
            algo=self.algo,
            width=self.width,
            device=self.device,
            grad_steps_per_s=1.0 / grad,
            env_steps_per_s=1.0 / env,
            gflop_per_step=self.flop_per_step / 1e9,
            gflops=self.flop_per_step / 1e9 / grad,
            matmul_gflops=matmul_gflops(self.width, self.device),
            run_3000_s=RUN_RANDOM * random_step + (RUN_STEPS - RUN_RANDOM) * env,
        )


def bench_algo(algo: str, width: int, device: str, threads: int = 2, steps: int = 200, rounds: int = 1) -> BenchRow:
    """Measure one algorithm at one width on one device (see module doc)."""
    with tempfile.TemporaryDirectory() as log_dir:
        subject = _Subject(algo, width, device, threads, log_dir)
        for _ in range(rounds):
            subject.time_round(steps)
        return subject.row()


def bench(
    algos: list[str],
    widths: list[int],
    devices: list[str] | None = None,
    threads: int = 2,
    steps: int = 200,
    rounds: int = 5,
) -> list[BenchRow]:
    """Every algorithm at every width on every device (``cuda`` added when present); ratios to
    SACLag at the same width and device.

    On a shared machine a single timing drifts by tens of percent from minute to minute, so
    the algorithms of one width and device are built together and timed in ``rounds``
    interleaved rounds of ``steps`` steps; each figure is the median over rounds and each
    ratio the median of the per-round ratios.
    """
    if devices is None:
        devices = ['cpu'] + (['cuda:0'] if torch.cuda.is_available() else [])
    torch.set_num_threads(threads)
    rows: list[BenchRow] = []
    for dev in devices:
        for width in widths:
            with tempfile.TemporaryDirectory() as log_dir:
                subjects = [_Subject(a, width, dev, threads, f'{log_dir}/{a}') for a in algos]
                for _ in range(rounds):
                    for subject in subjects:
                        subject.time_round(steps)
                group = [subject.row() for subject in subjects]
                ref = next((s for s in subjects if s.algo == 'SACLag'), None)
                for subject, row in zip(subjects, group):
                    if ref is not None:
                        row.ratio_grad = statistics.median(r / g for r, g in zip(ref.grad, subject.grad))
                        row.ratio_env = statistics.median(r / e for r, e in zip(ref.env, subject.env))
                        row.ratio_run = row.run_3000_s / next(r for r in group if r.algo == 'SACLag').run_3000_s
                rows.extend(group)
    return rows


def format_table(rows: list[BenchRow]) -> str:
    """A markdown table of the rows, with the machine in a header line."""
    threads = torch.get_num_threads()
    head = (
        f'torch {torch.__version__}, {platform.processor() or platform.machine()}, '
        f'{threads} torch threads'
        + (f', {torch.cuda.get_device_name(0)}' if torch.cuda.is_available() else '')
    )
    lines = [
        head,
        '',
        '| algo | width | device | grad steps/s | env steps/s | speed vs SACLag (grad / env) | 3000-step run (s) | run time / SACLag\'s | GFLOP/step | GFLOP/s | matmul GFLOP/s |',
        '|---|---|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        d = asdict(r)
        lines.append(
            f"| {d['algo']} | {d['width']} | {d['device']} | {d['grad_steps_per_s']:.1f} | {d['env_steps_per_s']:.1f} | "
            f"{d['ratio_grad']:.2f} / {d['ratio_env']:.2f} | {d['run_3000_s']:.1f} | {d['ratio_run']:.2f} | "
            f"{d['gflop_per_step']:.3f} | {d['gflops']:.1f} | "
            f"{d['matmul_gflops']:.1f} |",
        )
    return '\n'.join(lines)
