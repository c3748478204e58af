"""The actor's saturation over training (issue 22): for each saved policy of each run (every 10th
epoch), the share of action dimensions whose pre-tanh mean is beyond +-2 (the tanh's slope there is
below 0.07, so neither Q nor a penalty moves it) and the mean std, all on one fixed set of states:
5 deterministic episodes of REF_RUN's final policy. Works for OmniSafe's SAC family and the
plugin's alike (a GaussianSACActor). usage: python examples/saturation_check.py REF_RUN RUN [RUN ...]"""
import json, sys
from pathlib import Path
import torch
from omnisafe.envs.core import make
import omnisafe_alam  # noqa
from omnisafe_alam.tools.runs import load_policy


def epochs(run):
    """The run's config, its saved policies by epoch (oldest first) and its task's spaces (one env,
    made once and closed, for the loader)."""
    cfg = json.loads((run / 'config.json').read_text())
    env = make(cfg['env_id'], num_envs=1, **(cfg.get('env_cfgs') or {}))
    spaces = env.observation_space, env.action_space
    env.close()
    files = sorted((run / 'torch_save').glob('epoch-*.pt'), key=lambda p: int(p.stem.split('-')[1]))
    return cfg, files, spaces


def load(cfg, path, spaces):
    return load_policy(cfg, torch.load(path, map_location='cpu', weights_only=True), *spaces)


ref = Path(sys.argv[1])
cfg, files, spaces = epochs(ref)
actor, norm = load(cfg, files[-1], spaces)
env = make(cfg['env_id'], num_envs=1, **(cfg.get('env_cfgs') or {}))
# OmniSafe trains in a [-1, 1] action box (compare's evaluation rescales alike)
low, high = torch.as_tensor(env.action_space.low), torch.as_tensor(env.action_space.high)
obs_set = []
for ep in range(5):
    o, _ = env.reset(seed=20_000 + ep); done = False
    while not done:
        obs_set.append(o.float())
        with torch.no_grad():
            a = actor.predict((norm.normalize(o) if norm else o).float(), deterministic=True)
        o, r, c, te, tr, _ = env.step(low + (a + 1.0) * 0.5 * (high - low)); done = bool(te) or bool(tr)
env.close()
X = torch.stack(obs_set).squeeze(1)
print('states', tuple(X.shape))
for run in map(Path, sys.argv[2:]):
    cfg, files, spaces = epochs(run)
    per_epoch = int(cfg['algo_cfgs']['steps_per_epoch'])
    line = []
    for f in files:
        e = int(f.stem.split('-')[1])
        if e == 0 or e % 10:
            continue
        act, nm = load(cfg, f, spaces)
        with torch.no_grad():
            mean, log_std = act.net(nm.normalize(X) if nm else X).chunk(2, dim=-1)
        line.append(f'{e * per_epoch // 1000}k {(mean.abs() > 2).float().mean():.2f}/{torch.clamp(log_std, -20, 2).exp().mean():.2f}')
    print(f"{cfg['algo']:9s} seed {cfg.get('seed')}", ' '.join(line))
