"""Separate the parts of a finished plugin run (issue 22): the cost critic against the realised
discounted cost of the newest replay data, the reward critic likewise, what the actor's own
action gets from the cost critic, how saturated the softplus cost head is, and the policy loss's
two pulls (Q and the penalty) on the actor's parameters and on its outputs (mean and log-std).
Reads a copy of the run (the run directory is not touched); needs a full checkpoint with its buffer and episodes of
1000 steps (Safety-Gymnasium). usage: python examples/critic_check.py RUN_DIR [LAST_STEPS]"""
import shutil, sys, tempfile
from pathlib import Path
import numpy as np, torch

run = Path(sys.argv[1]); last = int(sys.argv[2]) if len(sys.argv) > 2 else 40000
tmp = Path(tempfile.mkdtemp()) / run.name
shutil.copytree(run, tmp)
import omnisafe_alam  # noqa
from omnisafe_alam.glue.checkpoint import build_resumed
steps = int(sorted(tmp.glob('state/step-*.pt'), key=lambda p: int(p.stem.split('-')[1]))[-1].stem.split('-')[1])
algo = build_resumed(tmp, total_steps=steps + 2000 * 5)
buf = algo._buf.buffers[0] if hasattr(algo._buf, 'buffers') else algo._buf
data = buf.data
n = int(buf.size) if hasattr(buf, 'size') else len(data['obs'])
ptr = int(getattr(buf, 'ptr', n))
print('buffer size', n, 'ptr', ptr, {k: tuple(v.shape) for k, v in data.items()})
idx = np.arange(ptr - last, ptr) % buf.max_size if hasattr(buf, 'max_size') else np.arange(ptr - last, ptr)
obs, act = data['obs'][idx, 0], data['act'][idx, 0]
cost = (data['cost'][idx, 0] > 0).float(); rew = data['reward'][idx, 0]
gamma = algo._cfgs.algo_cfgs.gamma
cost_gamma = getattr(algo, '_cost_gamma', gamma)  # F's discount (alam_cfgs.cost_gamma)
L = 1000  # episode length of the Safety-Gymnasium tasks here (time limit, no termination)
assert last % L == 0
def mc(x, gamma):
    x = x.numpy().reshape(-1, L); out = np.zeros_like(x); acc = np.zeros(x.shape[0])
    for t in range(L - 1, -1, -1):
        acc = x[:, t] + gamma * acc; out[:, t] = acc
    return out.reshape(-1)
mc_c, mc_r = mc(cost, cost_gamma), mc(rew, gamma)
keep = (np.arange(last) % L) < L // 2  # far enough from the time limit for a fair comparison
ac = algo._actor_critic
with torch.no_grad():
    qc_buf = torch.stack(ac.cost_critic(obs, act)).mean(0).numpy()
    a_det = ac.actor.predict(obs, deterministic=True)
    qc_det = torch.stack(ac.cost_critic(obs, a_det)).mean(0).numpy()
    a_s = ac.actor(obs).rsample()
    qc_s = torch.stack(ac.cost_critic(obs, a_s)).mean(0).numpy()
    qr_buf = torch.min(*ac.reward_critic(obs, act)).numpy()
    qr_det = torch.min(*ac.reward_critic(obs, a_det)).numpy()
    std = ac.actor(obs).stddev.mean().item()
    lam = ac.multiplier(obs).numpy() if getattr(ac, 'multiplier', None) is not None else None
    da = (a_det - act).abs().mean().item()
k = keep
corr = lambda a, b: float(np.corrcoef(a, b)[0, 1])
print(f'last {last} steps; first half of each episode: {k.sum()} states')
print(f'cost:   MC mean {mc_c[k].mean():.3f} | Qc(s,a_buf) {qc_buf[k].mean():.3f} (corr {corr(qc_buf[k], mc_c[k]):.3f}) | Qc(s,pi_det) {qc_det[k].mean():.3f} | Qc(s,pi sample) {qc_s[k].mean():.3f}')
print(f'reward: MC mean {mc_r[k].mean():.3f} | Q(s,a_buf) {qr_buf[k].mean():.3f} (corr {corr(qr_buf[k], mc_r[k]):.3f}) | Q(s,pi_det) {qr_det[k].mean():.3f}')
print(f'actor std {std:.3f}; |a_det - a_buf| {da:.3f}; actions at |a|>0.95: {(a_det.abs() > 0.95).float().mean().item():.3f}')
for lo, hi in [(0, 0.1), (0.1, 1), (1, 5), (5, 100)]:
    m = k & (mc_c >= lo) & (mc_c < hi)
    if m.any():
        print(f'  MC cost in [{lo},{hi}): {m.sum():6d} states, Qc(s,a_buf) {qc_buf[m].mean():.3f}, Qc(s,pi_det) {qc_det[m].mean():.3f}' + (f', multiplier {lam[m].mean():.2f}' if lam is not None else ''))
print('in hazard now (cost 1):', int(cost[k].sum()), 'of', int(k.sum()))
with torch.no_grad():
    pre = torch.stack(ac.cost_critic.pre_activations(obs, act))
    print('cost critic pre-softplus: mean %.2f, q10 %.2f, q50 %.2f, q90 %.2f; softplus slope (sigmoid) mean %.4f' % (
        pre.mean(), pre.quantile(0.1), pre.quantile(0.5), pre.quantile(0.9), torch.sigmoid(pre).mean()))
    hz = cost.bool() & torch.from_numpy(k)
    print('in-hazard states: pre %.2f, Qc %.3f' % (pre[:, hz].mean(), torch.stack(ac.cost_critic(obs, act)).mean(0)[hz].mean()))

# the actor's two pulls: the reward critic's and the constraint penalty's (as in the policy loss)
sub = torch.from_numpy(np.flatnonzero(k)[:4096])
o = obs[sub]
a = ac.actor.predict(o, deterministic=True).detach().requires_grad_(True)
g_r = torch.autograd.grad(torch.min(*ac.reward_critic(o, a)).sum(), a)[0]
g_c = torch.autograd.grad(torch.stack(ac.cost_critic(o, a)).mean(0).sum(), a)[0]
cos_a = torch.nn.functional.cosine_similarity(g_r, -g_c, dim=-1)
print('action gradients at the deterministic action: |dQr/da| %.4f, |dQc/da| %.4f; cos(dQr/da, -dQc/da) q10 %.2f q50 %.2f q90 %.2f, '
      'share < 0 (less cost means less reward) %.2f' % (g_r.norm(dim=-1).mean(), g_c.norm(dim=-1).mean(), cos_a.quantile(0.1),
                                                        cos_a.quantile(0.5), cos_a.quantile(0.9), (cos_a < 0).float().mean()))
if hasattr(algo, '_penalty'):
    params = [p for p in ac.actor.parameters()]
    act_s = ac.actor.predict(o, deterministic=False)
    q_term = -torch.min(*ac.reward_critic(o, act_s)).mean()
    with torch.no_grad():
        lam_o = algo._multiplier_at(o)
    pen_term = algo._penalty_scale * algo._penalty(lam_o, algo._residual(o)).mean()
    gq = torch.cat([x.flatten() for x in torch.autograd.grad(q_term, params)])
    gp = torch.cat([x.flatten() for x in torch.autograd.grad(pen_term, params)])
    print('actor-parameter gradients of the policy loss: |Q term| %.4f, |penalty term| %.4f (weight %.4f), cosine %.3f '
          '(< 0: the penalty undoes the reward step)' % (gq.norm(), gp.norm(), algo._penalty_scale,
                                                         torch.nn.functional.cosine_similarity(gq, gp, dim=0)))
    # the same two pulls at the actor's outputs (per state, before the tanh: the mean and the
    # log-std): where the mean is saturated the tanh hides it from both, and the log-std's share
    # says whether either term moves the policy's spread at all
    outs = []
    hook = ac.actor.net.register_forward_hook(lambda module, inputs, output: outs.append(output))
    q_out = -torch.min(*ac.reward_critic(o, ac.actor.predict(o, deterministic=False))).mean()
    pen_out = algo._penalty_scale * algo._penalty(lam_o, algo._residual(o)).mean()
    hook.remove()
    gq_o, gp_o = torch.autograd.grad(q_out, outs[0])[0], torch.autograd.grad(pen_out, outs[1])[0]
    half = gq_o.shape[-1] // 2
    print('actor outputs: pre-tanh mean beyond +-2 (tanh slope < 0.07) on %.2f of action dims; mean outputs: '
          '|penalty| / |Q| %.2f, cosine %.3f; log-std outputs: |Q| %.1e, |penalty| %.1e (mean outputs: %.1e, %.1e)' % (
              (outs[0][:, :half].abs() > 2.0).float().mean(), gp_o[:, :half].norm() / gq_o[:, :half].norm(),
              torch.nn.functional.cosine_similarity(gq_o[:, :half].flatten(), gp_o[:, :half].flatten(), dim=0),
              gq_o[:, half:].norm(), gp_o[:, half:].norm(), gq_o[:, :half].norm(), gp_o[:, :half].norm()))
