#!/usr/bin/env python3
"""FlexAttention on the CPU on the heads of the permutation figures
(docs/PERFORMANCE.md, issue 23), in the original token order and in the
period transpose (Q, K and V gathered into the permuted order, the mask
read at the original positions through the permutation, O scattered back):
what a FlexAttention user gets from the same layout by hand.

One head, head_dim 128, fp32, BLOCK_SIZE 64, flex_attention under
torch.compile (the first call, which compiles, is reported apart; the time
is the median of --repeats later calls). Prints one JSON line per pattern
and order, with the BlockMask's visited and full blocks.

  build/bench-venv/bin/python bench/flex_permute.py [--len 16384] [--threads 2]
"""

import argparse
import json
import statistics
import time

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention


def multi_diagonal(stride, width):
    def mask(b, h, q, kv):
        r = (kv - q) % stride
        return (r <= width) | (stride - r <= width)
    return mask


def grid(stride, vertical, slash):
    def mask(b, h, q, kv):
        return ((kv % stride) < vertical) | (((q - kv) % stride) < slash)
    return mask


PATTERNS = {
    "#attn.multi_diagonal<stride = 1024, width = 32>": multi_diagonal(1024, 32),
    "#attn.grid<stride = 1024, vertical_width = 64, slash_width = 64>":
        grid(1024, 64, 64),
}


def transpose_order(n, p):
    """order[s] = the token at slot s (tokens stably sorted by t mod p)."""
    t = torch.arange(n)
    return torch.sort(t % p, stable=True).indices


def blocks(bm):
    visited = int(bm.kv_num_blocks.sum())
    full = int(bm.full_kv_num_blocks.sum()) if bm.full_kv_num_blocks is not None else 0
    return visited + full, full


def run(flex, name, mask_mod, n, order, repeats):
    if order is None:
        mod = mask_mod
    else:
        def mod(b, h, q, kv):  # the pattern at the original positions
            return mask_mod(b, h, order[q], order[kv])
    bm = create_block_mask(mod, 1, 1, n, n, device="cpu", BLOCK_SIZE=64)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 1, n, 128, generator=g) for _ in range(3))

    def call():
        if order is None:
            return flex(q, k, v, block_mask=bm)
        t0 = time.perf_counter()
        qp, kp, vp = q[:, :, order], k[:, :, order], v[:, :, order]
        gather = time.perf_counter() - t0
        o = flex(qp, kp, vp, block_mask=bm)
        t0 = time.perf_counter()
        out = torch.empty_like(o)
        out[:, :, order] = o
        call.gather = gather + time.perf_counter() - t0
        return out
    call.gather = 0.0
    t0 = time.perf_counter()
    call()
    first = time.perf_counter() - t0
    times, gathers = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
        gathers.append(call.gather / times[-1])
    visited, full = blocks(bm)
    return {"pattern": name, "len": n,
            "order": "original" if order is None else "period_transpose<1024>",
            "visited": visited, "full": full, "partial": visited - full,
            "flex_first_call_s": round(first, 3),
            "flex_s": round(statistics.median(times), 4),
            "gather_share": round(statistics.median(gathers), 4),
            "torch": torch.__version__}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--len", type=int, default=16384)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    flex = torch.compile(flex_attention)
    for name, mask_mod in PATTERNS.items():
        for order in (None, transpose_order(args.len, 1024)):
            print(json.dumps(run(flex, name, mask_mod, args.len, order,
                                 args.repeats)), flush=True)


main()
