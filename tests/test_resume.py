"""Full checkpoints and ``omnisafe-alam resume``: a resumed run reproduces the uninterrupted one.

Known-answer tasks save their simulator, so a run resumed from any checkpoint (an epoch end, or
mid-epoch and mid-episode after SIGTERM, or after a SIGKILL that left rows past the newest
checkpoint) must write the same ``progress.csv`` rows, every column but the timings, and end with
the same networks. On Safety-Gymnasium the episode in progress restarts; everything else must be
restored exactly.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from conftest import BIN, REPO, run_cli

EPOCH = 200
WARMUP = 100  # start_learning_steps


def _cfgs(log_dir: Path, algo: str, epochs: int, **checkpoint: Any) -> dict[str, Any]:
    cfgs: dict[str, Any] = {
        'seed': 0,
        'train_cfgs': {'total_steps': EPOCH * epochs, 'torch_threads': 1},
        'algo_cfgs': {'steps_per_epoch': EPOCH, 'start_learning_steps': WARMUP, 'batch_size': 32, 'size': 5000},
        'logger_cfgs': {'log_dir': str(log_dir), 'use_tensorboard': True, 'save_model_freq': 1},
        'model_cfgs': {'actor': {'hidden_sizes': [16, 16]}, 'critic': {'hidden_sizes': [16, 16]}},
        'checkpoint_cfgs': {'state_freq': 1, 'keep_last': 10, **checkpoint},
    }
    if algo not in ('SACFPI', 'ALGD'):
        cfgs['alam_cfgs'] = {'multiplier_hidden_sizes': [16, 16], 'm_lambda': 10}
    return cfgs


def _agent(algo: str, env_id: str, log_dir: Path, epochs: int = 3, layer_norm: bool | None = None, **checkpoint: Any) -> Any:
    import omnisafe

    import omnisafe_alam  # noqa: F401

    cfgs = _cfgs(log_dir, algo, epochs, **checkpoint)
    if layer_norm is not None:
        cfgs['alam_cfgs']['reward_critic_layer_norm'] = layer_norm
    return omnisafe.Agent(algo, env_id, custom_cfgs=cfgs)


def _run_dir(log_dir: Path) -> Path:
    (run,) = log_dir.glob('*/seed-*')
    return run


def _rows(run: Path) -> pd.DataFrame:
    frame = pd.read_csv(run / 'progress.csv')
    return frame[[c for c in frame.columns if not c.startswith('Time/')]]


def _final_params(run: Path) -> dict[str, torch.Tensor]:
    (last,) = sorted((run / 'torch_save').glob('epoch-*.pt'), key=lambda p: int(p.stem.split('-')[1]))[-1:]
    params = torch.load(last, weights_only=True)
    return {f'{k}.{n}': t for k, v in params.items() if isinstance(v, dict) for n, t in v.items()}


def _assert_same_run(run: Path, reference_rows: pd.DataFrame, reference_params: dict[str, torch.Tensor]) -> None:
    rows = _rows(run)
    assert list(rows.columns) == list(reference_rows.columns)
    assert len(rows) == len(reference_rows)
    pd.testing.assert_frame_equal(rows, reference_rows, check_exact=True)
    params = _final_params(run)
    assert params.keys() == reference_params.keys()
    for name, value in reference_params.items():
        assert torch.equal(params[name], value), name


_REFERENCES: dict[tuple[str, str], Path] = {}


@pytest.fixture(scope='module')
def reference(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """``reference(algo, env_id)``: the run directory of an uninterrupted 3-epoch run (cached)."""

    def get(algo: str, env_id: str) -> Path:
        if (algo, env_id) not in _REFERENCES:
            log_dir = tmp_path_factory.mktemp(f'{algo}-{env_id}')
            _agent(algo, env_id, log_dir).learn()
            _REFERENCES[algo, env_id] = _run_dir(log_dir)
        return _REFERENCES[algo, env_id]

    return get


@pytest.mark.parametrize(
    ('algo', 'env_id'),
    [('SACALaM', 'StatewiseLimit-v0'), ('SACFPI', 'StatewiseBraking-v0'), ('ASAC', 'StatewiseDetour-v0'), ('ALGD', 'StatewiseLimit-v0')],
)
def test_resume_from_an_older_checkpoint_rewrites_the_same_rows(algo: str, env_id: str, reference: Any, tmp_path: Path) -> None:
    """What a SIGKILL leaves: rows past the checkpoint. Resuming from it rewrites them exactly."""
    from omnisafe_alam.glue.checkpoint import list_states, load_state_file, resume

    source = reference(algo, env_id)
    run = tmp_path / source.name
    shutil.copytree(source, run)
    reference_rows, reference_params = _rows(run), _final_params(run)
    assert len(reference_rows) == 3
    states = list_states(run)
    assert [p.name for p in states] == [f'step-{EPOCH * k}.pt' for k in (1, 2, 3)]
    # files load with weights_only (tensors and plain containers) and say where they stand
    state = load_state_file(states[0])
    assert state['position'] == {**state['position'], 'epoch': 1, 'env_steps': EPOCH}
    assert state['logger']['epoch'] == 1
    assert state['buffer']['size'] == EPOCH

    resume(run, checkpoint=states[0])
    _assert_same_run(run, reference_rows, reference_params)
    # the resumed run wrote no duplicate epoch
    assert _rows(run)['Train/Epoch'].tolist() == [0, 1, 2]


def test_sigterm_mid_episode_saves_and_resume_continues_exactly(reference: Any, tmp_path: Path) -> None:
    """SIGTERM in the middle of an epoch (and of a 50-step episode): state saved at that step."""
    from omnisafe_alam.core.training import StatewiseOffPolicy
    from omnisafe_alam.glue.checkpoint import list_states, resume

    source = reference('SACFPI', 'StatewiseBraking-v0')
    reference_rows, reference_params = _rows(source), _final_params(source)

    agent = _agent('SACFPI', 'StatewiseBraking-v0', tmp_path)
    inner = agent.agent
    original = StatewiseOffPolicy._update

    def update_then_signal(self: Any) -> None:
        original(self)
        # update k runs at env step k + WARMUP: this is step 2 * EPOCH + 17, in epoch 2's 18th
        # step and in the middle of a 50-step episode
        if self._update_count == 2 * EPOCH - WARMUP + 17:
            os.kill(os.getpid(), signal.SIGTERM)

    inner._update = update_then_signal.__get__(inner)
    with pytest.raises(SystemExit) as stop:
        agent.learn()
    assert stop.value.code == 128 + signal.SIGTERM
    run = _run_dir(tmp_path)
    newest = list_states(run)[-1]
    assert newest.name == f'step-{2 * EPOCH + 18}.pt'
    assert len(_rows(run)) == 2

    resume(run)
    _assert_same_run(run, reference_rows, reference_params)


def test_sigkill_and_the_resume_command(reference: Any, tmp_path: Path) -> None:
    """A real SIGKILL of training in another process, then `omnisafe-alam resume`."""
    import json

    source = reference('SACALaM', 'StatewiseLimit-v0')
    cfgs = _cfgs(tmp_path, 'SACALaM', 3)
    script = (
        'import json, omnisafe, omnisafe_alam\n'
        f'omnisafe.Agent("SACALaM", "StatewiseLimit-v0", custom_cfgs=json.loads({json.dumps(json.dumps(cfgs))})).learn()\n'
    )
    proc = subprocess.Popen([sys.executable, '-c', script], cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not list(tmp_path.glob(f'*/seed-*/state/step-{EPOCH}.pt')) and time.time() < deadline:
        assert proc.poll() is None, 'training ended before it could be killed'
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    run = _run_dir(tmp_path)

    result = run_cli([str(BIN / 'omnisafe-alam'), 'resume', str(run)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'finished' in result.stdout
    _assert_same_run(run, _rows(source), _final_params(source))

    # a finished run resumes only to extend it, by the steps asked
    again = run_cli([str(BIN / 'omnisafe-alam'), 'resume', str(run)], cwd=tmp_path)
    assert again.returncode == 2 and f'has finished its {3 * EPOCH} steps' in again.stderr
    longer = run_cli([str(BIN / 'omnisafe-alam'), 'resume', str(run), '--total-steps', str(4 * EPOCH)], cwd=tmp_path)
    assert longer.returncode == 0, longer.stderr[-3000:]
    rows = _rows(run)
    assert rows['Train/Epoch'].tolist() == [0, 1, 2, 3]
    assert rows['TotalEnvSteps'].iloc[-1] == 4 * EPOCH


def test_safety_gymnasium_restores_everything_but_the_episode_in_progress(tmp_path: Path) -> None:
    """Safety-Gymnasium cannot save its simulator: the episode restarts, the rest is exact."""
    from omnisafe_alam.glue.checkpoint import build_resumed, list_states, load_state_file

    agent = _agent('SACALaM', 'SafetyPointGoal1-v0', tmp_path, epochs=1)
    agent.learn()
    run = _run_dir(tmp_path)
    state = load_state_file(list_states(run)[-1])
    assert state['env']['env']['restorable'] is False
    assert state['env']['eval_env']['restorable'] is False

    resumed = build_resumed(run, total_steps=2 * EPOCH)
    again = resumed._training_state()
    for kind in ('modules', 'optimizers', 'schedulers'):
        _assert_nested_equal(again[kind], state[kind], kind)
    _assert_nested_equal(again['buffer'], state['buffer'], 'buffer')
    _assert_nested_equal(again['rng'], state['rng'], 'rng')
    _assert_nested_equal(again['logger'], state['logger'], 'logger')
    assert torch.equal(again['log_alpha'], state['log_alpha'])
    assert again['attributes'] == state['attributes']
    # the observation normaliser's statistics are restored (the reset pushed one start state)
    saved_norm = state['env']['env']['layers']
    assert [set(layer) for layer in again['env']['env']['layers']] == [set(layer) for layer in saved_norm]
    # the episode in progress restarted: fresh counters, a new start state
    assert float(again['env']['episodes']['_ep_len'].sum()) == 0.0
    assert float(state['env']['episodes']['_ep_len'].sum()) > 0.0
    resumed.learn()
    assert _rows(run)['Train/Epoch'].tolist() == [0, 1]


def _assert_nested_equal(a: Any, b: Any, where: str) -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _assert_nested_equal(a[key], b[key], f'{where}.{key}')
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_nested_equal(x, y, f'{where}[{i}]')
    elif isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, float) and a != a:
        assert isinstance(b, float) and b != b, where  # NaN stays NaN
    else:
        assert a == b, where


def test_bad_checkpoints_are_refused_by_name_and_change_nothing(tmp_path: Path) -> None:
    from omnisafe_alam.glue.checkpoint import CheckpointError, list_states, resume

    with pytest.raises(CheckpointError, match='not a run directory'):
        resume(tmp_path)
    # trained as the runs before the key were: without the LayerNorm
    _agent('SACALaM', 'StatewiseLimit-v0', tmp_path, epochs=2, keep_last=1, layer_norm=False).learn()
    run = _run_dir(tmp_path)
    (newest,) = list_states(run)
    progress = (run / 'progress.csv').read_text()

    # a config edited after training
    config = (run / 'config.json').read_text()
    (run / 'config.json').write_text(config.replace('"K": 5', '"K": 7'))
    with pytest.raises(CheckpointError, match=r"alam_cfgs\.K"):
        resume(run, total_steps=3 * EPOCH)
    (run / 'config.json').write_text(config)

    # truncated file
    data = newest.read_bytes()
    newest.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match='truncated'):
        resume(run, total_steps=3 * EPOCH)
    # a foreign torch file
    torch.save({'pi': {}}, newest)
    with pytest.raises(CheckpointError, match='not an omnisafe-alam full checkpoint'):
        resume(run, total_steps=3 * EPOCH)
    # a missing one
    newest.unlink()
    with pytest.raises(CheckpointError, match='no full checkpoint'):
        resume(run, total_steps=3 * EPOCH)
    with pytest.raises(CheckpointError, match='does not exist'):
        resume(run, checkpoint=run / 'state' / 'step-7.pt')
    assert (run / 'progress.csv').read_text() == progress


def test_a_run_made_before_a_key_existed_resumes_as_it_trained(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A run whose config.json and checkpoint predate ``alam_cfgs.cost_critic_floor``,
    ``cost_critic_min_slope`` and ``reward_critic_layer_norm`` resumes with the keys' old-behaviour
    values (0: off; 0: the MSE; False: no LayerNorm, whose checkpoint holds none), says so, and
    trains on."""
    import json

    from omnisafe_alam.glue.checkpoint import build_resumed, list_states, load_state_file

    # trained as the runs before the key were: without the LayerNorm
    _agent('SACALaM', 'StatewiseLimit-v0', tmp_path, epochs=2, keep_last=1, layer_norm=False).learn()
    run = _run_dir(tmp_path)
    config = json.loads((run / 'config.json').read_text())
    assert config['alam_cfgs'].pop('cost_critic_floor') == 0.0
    assert config['alam_cfgs'].pop('cost_critic_min_slope') == 0.0
    assert config['alam_cfgs'].pop('reward_critic_layer_norm') is False
    (run / 'config.json').write_text(json.dumps(config))
    (newest,) = list_states(run)
    state = load_state_file(newest)
    del state['config']['alam_cfgs']['cost_critic_floor']
    del state['config']['alam_cfgs']['cost_critic_min_slope']
    del state['config']['alam_cfgs']['reward_critic_layer_norm']
    torch.save(state, newest)
    algo = build_resumed(run, total_steps=3 * EPOCH)
    err = capsys.readouterr().err
    assert 'cost_critic_floor=0.0' in err and 'cost_critic_min_slope=0.0' in err
    assert 'reward_critic_layer_norm=False' in err
    assert algo._cost_logit_floor == float('-inf')  # noqa: SLF001
    assert algo._cost_min_slope == 0.0  # noqa: SLF001
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in algo._actor_critic.reward_critic.modules())  # noqa: SLF001
    algo.learn()
    assert len(pd.read_csv(run / 'progress.csv')) == 3


def test_a_run_made_before_a_logged_key_resumes_without_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A checkpoint written before the plugin logged ``Train/PolicyStd`` resumes with its
    ``progress.csv`` columns as they were (the key stays unlogged in that run, and the log says
    so); a new run logs the actor's std, a positive number, once a dual cycle has run (0 before,
    as ``Actor/GradNorm*``)."""
    from omnisafe_alam.glue.checkpoint import build_resumed, list_states, load_state_file

    _agent('SACALaM', 'StatewiseLimit-v0', tmp_path, epochs=2, keep_last=1).learn()
    run = _run_dir(tmp_path)
    rows = pd.read_csv(run / 'progress.csv')
    assert rows['Train/PolicyStd'].iloc[0] == 0.0  # warm-up epoch: no dual cycle yet
    assert 0.0 < rows['Train/PolicyStd'].iloc[1] < 10.0
    # as written before the key: no column, no logger data, no dual statistic
    rows.drop(columns='Train/PolicyStd').to_csv(run / 'progress.csv', index=False)
    (newest,) = list_states(run)
    state = load_state_file(newest)
    for table in (state['logger']['data'], state['logger']['current_row'], state['attributes']['_dual_stats']):
        del table['Train/PolicyStd']
    torch.save(state, newest)
    algo = build_resumed(run, total_steps=3 * EPOCH)
    assert "logged ['Train/PolicyStd']" in ' '.join(capsys.readouterr().out.split())
    algo.learn()
    resumed = pd.read_csv(run / 'progress.csv')
    assert len(resumed) == 3 and 'Train/PolicyStd' not in resumed.columns
    assert not resumed.drop(columns=[c for c in resumed.columns if c.startswith('Time/')]).isna().any().any()


def test_checkpoint_cfgs_are_validated(tmp_path: Path) -> None:
    from omnisafe_alam.glue.config import AlamConfigError

    with pytest.raises(AlamConfigError, match=r'checkpoint_cfgs\.keep_last=0 must be >= 1'):
        _agent('SACALaM', 'StatewiseLimit-v0', tmp_path, keep_last=0)


def test_without_the_buffer_the_checkpoint_is_small_and_training_refills(tmp_path: Path) -> None:
    from omnisafe_alam.glue.checkpoint import build_resumed, list_states, load_state_file

    _agent('SACALaM', 'StatewiseLimit-v0', tmp_path / 'with', epochs=1).learn()
    _agent('SACALaM', 'StatewiseLimit-v0', tmp_path / 'without', epochs=1, save_buffer=False).learn()
    (with_buffer,) = list_states(_run_dir(tmp_path / 'with'))
    (without,) = list_states(_run_dir(tmp_path / 'without'))
    assert load_state_file(without)['buffer'] is None
    obs_dim = load_state_file(with_buffer)['buffer']['data']['obs'].shape[-1]
    per_transition = 4 * (2 * obs_dim + 1 + 3)  # obs, next_obs, act (1-d), reward, cost, done
    assert with_buffer.stat().st_size - without.stat().st_size >= EPOCH * per_transition
    run = _run_dir(tmp_path / 'without')
    agent = build_resumed(run, total_steps=2 * EPOCH)
    before = agent._update_count
    assert before == EPOCH - WARMUP - 1  # steps WARMUP + 1 .. EPOCH - 1 of the first epoch updated
    agent.learn()
    # no update until the policy had put WARMUP transitions back (the last store allows one)
    assert agent._update_count - before == EPOCH - WARMUP + 1
    assert _rows(run)['Train/Epoch'].tolist() == [0, 1]
