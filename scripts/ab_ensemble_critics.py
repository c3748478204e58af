"""Twin (and quadruple) critics as separate MLPs vs one batched ensemble (baddbmm): one Adam step,
one thread, 64 wide, 5 alternating rounds of 200 steps, at the critic batch (256) and the actor's K=5 batch (1280)."""
import time, torch, statistics
from torch import nn
torch.set_num_threads(1)
torch.manual_seed(0)
ind, h, B = 30, 64, 256
def mlp(): return nn.Sequential(nn.Linear(ind, h), nn.ReLU(), nn.Linear(h, h), nn.ReLU(), nn.Linear(h, 1))
class Sep(nn.Module):
    def __init__(s, n): super().__init__(); s.nets = nn.ModuleList([mlp() for _ in range(n)])
    def forward(s, x): return [n(x).squeeze(-1) for n in s.nets]
class Ens(nn.Module):
    def __init__(s, n):
        super().__init__()
        s.w = nn.ParameterList([nn.Parameter(torch.randn(n, a, b) * 0.1) for a, b in ((ind, h), (h, h), (h, 1))])
        s.b = nn.ParameterList([nn.Parameter(torch.zeros(n, 1, b)) for b in (h, h, 1)])
    def forward(s, x):
        y = x.unsqueeze(0).expand(len(s.w[0]), *x.shape)
        for i, (w, b) in enumerate(zip(s.w, s.b)):
            y = torch.baddbmm(b, y, w)
            if i < 2: y = torch.relu(y)
        return list(y.squeeze(-1).unbind(0))
for n in (2, 4):
  for rows in (B, 5 * B):
    mods = {'sep': Sep(n), 'ens': Ens(n)}
    opts = {k: torch.optim.Adam(m.parameters(), fused=True) for k, m in mods.items()}
    x = torch.randn(rows, ind)
    res = {k: [] for k in mods}
    for r in range(5):
        for k, m in mods.items():
            t = time.perf_counter()
            for _ in range(200):
                opts[k].zero_grad(); sum(q.pow(2).mean() for q in m(x)).backward(); opts[k].step()
            res[k].append((time.perf_counter() - t) / 200 * 1e3)
    print(n, rows, {k: round(statistics.median(v), 3) for k, v in res.items()})
