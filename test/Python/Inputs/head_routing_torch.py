"""tessera.torch.attention with per-token head routing (head-routing.test):
layer 0 of head_routing.mlir on CPU float32 tensors, a random head_active
[B, Nq, H], against float64 torch attention masked pair by pair from
docs/patterns.md with inactive pairs zero; the gradients (inactive pairs
get none) against float64 autograd; per-sequence options refused."""
import sys

import torch

import tessera.torch as tt

bundle = sys.argv[1]
torch.manual_seed(9)
B, NQ, NK, H, HKV, D = 2, 130, 200, 6, 3, 64
q = torch.randn(B, NQ, H, D, requires_grad=True)
k = torch.randn(B, NK, HKV, D, requires_grad=True)
v = torch.randn(B, NK, HKV, D, requires_grad=True)
active = torch.rand(B, NQ, H) < 0.4
o, lse = tt.attention(q, k, v, bundle, 0, head_active=active)
wo = torch.randn(o.shape)
wl = torch.randn(lse.shape)
fin = torch.isfinite(lse.detach())
loss = (o * wo).sum() + (lse.where(fin, 0.0) * wl).sum()
loss.backward()

p = torch.arange(NQ)[:, None] + NK - NQ
key = torch.arange(NK)[None, :]
d = key - p
masks = {0: d <= 0, 1: (d <= 0) & (d >= -37), 2: (d <= 0) & (d >= -37),
         3: (d <= 0) & ((key < 4) | (d >= -20)), 4: (d >= -30) & (d <= 30),
         5: torch.zeros(NQ, NK, dtype=torch.bool)}
q64, k64, v64 = (x.detach().double().requires_grad_(True) for x in (q, k, v))
worst = 0.0
ref_loss = 0.0
o, lse = o.detach(), lse.detach()
for b in range(B):
    for h in range(H):
        mask = masks[h] & active[b, :, h][:, None]
        s = q64[b, :, h] @ k64[b, :, h // 2].T / D ** 0.5
        s = s.masked_fill(~mask, -1e30)
        all_lse = torch.logsumexp(s, 1)
        empty = ~mask.any(1)
        w = torch.exp(s - all_lse[:, None]).where(mask, 0.0)
        ref = w @ v64[b, :, h // 2]
        ref_loss = ref_loss + (ref * wo[b, :, h]).sum() + \
            (all_lse.where(~empty, 0.0) * wl[b, h]).sum()
        ref = ref.detach()
        ref_lse = all_lse.detach().masked_fill(empty, float("-inf"))
        worst = max(worst, (ref - o[b, :, h].double()).abs().max().item())
        assert torch.equal(torch.isfinite(ref_lse), torch.isfinite(lse[b, h]))
        f = torch.isfinite(ref_lse)
        if f.any():
            worst = max(worst, (ref_lse[f] - lse[b, h][f].double()).abs()
                        .max().item())
zeros = bool((o[~active] == 0).all())
print(f"torch head_active: error {'ok' if worst < 1e-4 else worst}, "
      f"inactive rows zero {zeros}")
ref_loss.backward()
grad = max((a.grad - b.grad.float()).abs().max().item()
           for a, b in ((q, q64), (k, k64), (v, v64)))
print(f"torch head_active gradients: error {'ok' if grad < 1e-4 else grad}, "
      f"inactive dq zero {bool((q.grad[~active] == 0).all())}")
try:
    tt.attention(q, k, v, bundle, 0, head_active=active, head_count=6)
except ValueError as e:
    print(f"per-sequence: {e}")
