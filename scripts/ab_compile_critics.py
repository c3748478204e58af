"""torch.compile (inductor, CPU) of a twin-critic regression vs eager: one thread, 64 wide, batch 256, 5 alternating rounds of 300 steps."""
import time, torch, statistics
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)
ind, h, B = 30, 64, 256
def mlp(): return nn.Sequential(nn.Linear(ind, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))
nets = nn.ModuleList([mlp(), mlp()])
def loss_fn(x, y):
    return sum((n(x).squeeze(-1) - y).pow(2).mean() for n in nets)
t=time.time()
cl = torch.compile(loss_fn)
x = torch.randn(B, ind); y = torch.randn(B)
cl(x, y).backward()
print('compile s', time.time()-t)
opt = torch.optim.Adam(nets.parameters(), fused=True)
res = {'eager': [], 'compiled': []}
for r in range(5):
    for k, f in (('eager', loss_fn), ('compiled', cl)):
        t = time.perf_counter()
        for _ in range(300):
            opt.zero_grad(); f(x, y).backward(); opt.step()
        res[k].append((time.perf_counter() - t) / 300 * 1e3)
print({k: round(statistics.median(v), 3) for k, v in res.items()})
