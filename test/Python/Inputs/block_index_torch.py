"""tessera.torch.attention with a caller's block index (block-index.test):
layer 0 of block_index.mlir on CPU float32 tensors against float64 torch
attention masked pair by pair from docs/patterns.md; on CUDA tensors and
with per-sequence options the index is refused."""
import sys

import torch

import tessera.torch as tt

bundle = sys.argv[1]
torch.manual_seed(23)
B, NQ, NK, H, HKV, D, BQ, BK = 2, 130, 200, 6, 3, 64, 64, 64
q = torch.randn(B, NQ, H, D)
k = torch.randn(B, NK, HKV, D)
v = torch.randn(B, NK, HKV, D)
first = (NK - NQ) // BQ
rows = (NK - 1) // BQ - first + 1
kb = -(-NK // BK)
keep = torch.rand(B, H, rows, kb) < 0.5
# Rows run on from head to head: head (b, h)'s row i ends where row i + 1
# of the flat [B * H * rows] list of rows begins.
flat = torch.cat([torch.zeros(1, dtype=torch.int64),
                  keep.reshape(-1, kb).sum(1).cumsum(0)])
offsets = torch.empty(B, H, rows + 1, dtype=torch.int32)
for b in range(B):
    for h in range(H):
        r0 = (b * H + h) * rows
        offsets[b, h] = flat[r0:r0 + rows + 1].to(torch.int32)
cols = torch.nonzero(keep.reshape(-1, kb))[:, 1].to(torch.int32)

q.requires_grad_(True)
k.requires_grad_(True)
v.requires_grad_(True)
o, lse = tt.attention(q, k, v, bundle, 0, block_index=(offsets, cols))
# The backward attends the forward's lists: gradients of a loss reading o
# and the (finite) LSE against float64 autograd over the same masks.
wo = torch.randn(o.shape)
wl = torch.randn(lse.shape)
fin = torch.isfinite(lse.detach())
loss = (o * wo).sum() + (lse.where(fin, 0.0) * wl).sum()
loss.backward()

p = torch.arange(NQ)[:, None] + NK - NQ
key = torch.arange(NK)[None, :]
worst = 0.0
q64, k64, v64 = (x.detach().double().requires_grad_(True) for x in (q, k, v))
ref_loss = 0.0
o = o.detach()
lse = lse.detach()
for b in range(B):
    for h in range(H):
        listed = keep[b, h][p // BQ - first, key // BK]
        mask = {0: listed, 5: listed, 1: listed & (key <= p),
                2: listed | ((key <= p) & (key >= p - 5)),
                3: listed & ~((key < 3) & (key <= p)),
                4: (key <= p).expand(NQ, NK)}[h]
        s = q64[b, :, h] @ k64[b, :, h // 2].T / D ** 0.5
        # A finite fill keeps the gradients of rows without keys finite;
        # those rows' weights are zeroed and their LSE is -inf.
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
        fin = torch.isfinite(ref_lse)
        assert torch.equal(fin, torch.isfinite(lse[b, h]))
        worst = max(worst, (ref_lse[fin] - lse[b, h][fin].double()).abs().max()
                    .item())
print(f"torch block_index: error {'ok' if worst < 1e-4 else worst}")
ref_loss.backward()
grad = max((a.grad - b.grad.float()).abs().max().item()
           for a, b in ((q, q64), (k, k64), (v, v64)))
print(f"torch block_index gradients: error {'ok' if grad < 1e-4 else grad}")
try:
    tt.attention(q, k, v, bundle, 0, block_index=(offsets, cols),
                 head_count=6)
except ValueError as e:
    print(f"per-sequence: {e}")
