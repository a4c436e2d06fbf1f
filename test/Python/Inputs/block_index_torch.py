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

o, lse = tt.attention(q, k, v, bundle, 0, block_index=(offsets, cols))

p = torch.arange(NQ)[:, None] + NK - NQ
key = torch.arange(NK)[None, :]
worst = 0.0
for b in range(B):
    for h in range(H):
        listed = keep[b, h][p // BQ - first, key // BK]
        mask = {0: listed, 5: listed, 1: listed & (key <= p),
                2: listed | ((key <= p) & (key >= p - 5)),
                3: listed & ~((key < 3) & (key <= p)),
                4: (key <= p).expand(NQ, NK)}[h]
        s = q[b, :, h].double() @ k[b, :, h // 2].double().T / D ** 0.5
        s = s.masked_fill(~mask, float("-inf"))
        ref_lse = torch.logsumexp(s, 1)
        w = torch.exp(s - ref_lse[:, None]).nan_to_num(0.0)
        ref = w @ v[b, :, h // 2].double()
        worst = max(worst, (ref - o[b, :, h].double()).abs().max().item())
        fin = torch.isfinite(ref_lse)
        assert torch.equal(fin, torch.isfinite(lse[b, h]))
        worst = max(worst, (ref_lse[fin] - lse[b, h][fin].double()).abs().max()
                    .item())
print(f"torch block_index: error {'ok' if worst < 1e-4 else worst}")
try:
    tt.attention(q, k, v, bundle, 0, block_index=(offsets, cols),
                 head_count=6)
except ValueError as e:
    print(f"per-sequence: {e}")
