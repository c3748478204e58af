"""The GPU path (`train_cfgs:device cuda:0`): trains end to end, and what it saves loads on CPU.

Skipped where torch sees no CUDA device (the 2-core CI machine); run on a GPU machine with
``pytest tests/test_cuda.py``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import tiny_cfgs

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device: the GPU path is not exercised here')


@pytest.mark.parametrize('algo', ['SACALaM', 'SACFPI'])
def test_cuda_run_trains_and_its_checkpoints_continue_on_cpu(tmp_path: Path, algo: str) -> None:
    import omnisafe

    import omnisafe_alam  # noqa: F401
    from omnisafe_alam.core.training import _training_parts
    from omnisafe_alam.glue.checkpoint import build_resumed
    from omnisafe_alam.tools.runs import load_run

    cfgs = tiny_cfgs(tmp_path)
    cfgs['train_cfgs'].update({'device': 'cuda:0', 'total_steps': 600})
    cfgs['checkpoint_cfgs'] = {'state_freq': 1}
    from omnisafe_alam.glue.defaults import SETTINGS_GROUP

    if SETTINGS_GROUP[algo] != 'alam_cfgs':
        cfgs.pop('alam_cfgs')
    agent = omnisafe.Agent(algo, 'StatewiseLimit-v0', custom_cfgs=cfgs)
    inner = agent.agent
    modules, _, _ = _training_parts(inner)
    assert modules and all(p.is_cuda for m in modules.values() for p in m.parameters())
    agent.learn()
    assert inner._buf.data['obs'].is_cuda  # noqa: SLF001  (the replay buffer lives on the GPU)

    (run_dir,) = (p.parent for p in tmp_path.rglob('config.json'))
    progress = pd.read_csv(run_dir / 'progress.csv')
    assert progress['TotalEnvSteps'].tolist() == [200, 400, 600]
    assert progress.select_dtypes('number').notna().all().all()

    # the policy OmniSafe saved and the full checkpoint both load on CPU
    loaded = load_run(run_dir)
    assert not any(p.is_cuda for p in loaded.actor.parameters())
    resumed = build_resumed(run_dir, total_steps=800, device='cpu')
    modules, _, _ = _training_parts(resumed)
    assert not any(p.is_cuda for m in modules.values() for p in m.parameters())
    resumed.learn()
    assert pd.read_csv(run_dir / 'progress.csv')['TotalEnvSteps'].tolist() == [200, 400, 600, 800]
