"""A/B of foreach vs fused Adam on SACALaM's update step (64 wide, one thread): alternating rounds in one process."""
import time, statistics, tempfile, torch
from omnisafe_alam.tools.bench import _build, _quiet
from omnisafe_alam.core.training import _training_parts
torch.set_num_threads(1)
with tempfile.TemporaryDirectory() as d, _quiet():
    inner = _build('SACALaM', 64, 'cpu', 1, d, 1000)
    for _ in range(20): inner._update()
opts = list(_training_parts(inner)[1].values())
def mode(fused):
    for o in opts:
        for g in o.param_groups:
            g['fused'] = fused; g['foreach'] = not fused
res = {False: [], True: []}
with _quiet():
    for r in range(6):
        for fused in (False, True):
            mode(fused)
            t = time.perf_counter()
            for _ in range(150): inner._update()
            res[fused].append((time.perf_counter() - t) / 150 * 1e3)
print({k: [round(x,2) for x in v] for k, v in res.items()})
print('median ms foreach', statistics.median(res[False]), 'fused', statistics.median(res[True]))
