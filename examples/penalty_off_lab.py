"""What the penalty costs at the end of a run (issue 22): continue a copy of a finished plugin run
from one of its full checkpoints with the safety penalty switched off, to the run's own total.

The copy trains exactly as the run did except for alam_cfgs.d, set after loading (default 100, far
above any discounted indicator cost at gamma_c 0.8, so g = F_hat - d < 0 everywhere: the augmented
penalty and its actor gradient are 0, logged as Actor/GradNormPenalty, and the dual cycles drive the
multiplier down). `omnisafe-alam resume` refuses a changed config, as it should; this lab is the
one place that changes it. The run directory is not touched; OUT gets a run directory of its own
(progress.csv, torch_save/) that `omnisafe-alam compare` reads beside the original.

usage: python examples/penalty_off_lab.py RUN_DIR STEP OUT [D]
  RUN_DIR  a finished run (.../seed-000-<time>) with state/step-STEP.pt
  STEP     the checkpoint to start from, e.g. 180000 (the last 10% of a 200k run)
  OUT      a new directory for the copy
"""
import json
import re
import shutil
import sys
from pathlib import Path

import torch

run, step, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
d_off = float(sys.argv[4]) if len(sys.argv) > 4 else 100.0
start = run / 'state' / f'step-{step}.pt'
if not start.is_file():
    sys.exit(f'no full checkpoint {start}: pick a step from {sorted(p.name for p in (run / "state").glob("step-*.pt"))}')
if out.exists():
    sys.exit(f'{out} exists: give a new directory')
out.mkdir(parents=True)
lab = out / run.name
epoch = step // json.loads((run / 'config.json').read_text())['algo_cfgs']['steps_per_epoch']


def later(folder: str, names: list[str]) -> list[str]:
    """What the copy leaves out: the other full checkpoints (each holds the replay buffer) and
    the policies saved after STEP, which the lab writes again."""
    if Path(folder).name == 'state':
        return [n for n in names if n != start.name]
    if Path(folder).name == 'torch_save':
        return [n for n in names if (m := re.match(r'epoch-(\d+)\.pt$', n)) and int(m[1]) > epoch]
    return []


shutil.copytree(run, lab, ignore=later)
torch.set_num_threads(1)
import omnisafe_alam  # noqa: F401  (registers the plugin's algorithms)
from omnisafe_alam.glue.checkpoint import build_resumed

algo = build_resumed(lab, checkpoint=lab / 'state' / start.name)
if not hasattr(algo._cfgs, 'alam_cfgs'):
    sys.exit(f'{run} is {algo.__class__.__name__}: it has no state-wise penalty to switch off')
print(f'resuming {lab} from step {step}: alam_cfgs.d {algo._cfgs.alam_cfgs.d} -> {d_off}')
algo._cfgs.alam_cfgs.d = d_off
print('final (EpRet, EpCost, EpLen):', algo.learn())
