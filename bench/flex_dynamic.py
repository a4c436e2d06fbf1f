#!/usr/bin/env python3
"""FlexAttention given the same dynamically built vertical-slash index as
Tessera's CPU path (written by `tessera-dynamic-bench --dump DIR`).

  bench/flex_dynamic.py DIR [--threads 2] [--repeats 3]

Builds the BlockMask from the index (64 x 64 blocks: per query block the key
blocks its diagonals and columns touch, every one partial; mask_mod: the
key is a kept column or k - q a kept diagonal, and causal), times that
(reported separately and included in the total), runs torch.compile'd
flex_attention on the CPU (the first, compiling call excluded and
reported), checks its output against Tessera's, and prints one JSON line.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch.nn.attention.flex_attention import BlockMask, flex_attention


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    d = a.dir
    q, k, v = (torch.from_numpy(np.load(os.path.join(d, f"{x}.npy")))
               for x in "qkv")
    ours = np.load(os.path.join(d, "o_vertical_slash.npy"))
    idx = json.load(open(os.path.join(d, "index.json")))
    n, hd = q.shape
    block = 64
    tb = (n + block - 1) // block

    t0 = time.perf_counter()
    cols = torch.tensor(idx["columns"], dtype=torch.long)
    diags = torch.tensor(idx["diagonals"], dtype=torch.long)
    col_sel = torch.zeros(n, dtype=torch.bool)
    col_sel[cols] = True
    diag_sel = torch.zeros(n, dtype=torch.bool)   # index -d
    diag_sel[-diags] = True
    # Key blocks per query block: the diagonals' ranges and the columns'
    # blocks, up to the causal bound.
    qb = torch.arange(tb)
    lo = (qb[:, None] * block + diags[None, :]).clamp(min=0)       # first key
    hi = (qb[:, None] * block + block - 1 + diags[None, :])
    hi = torch.minimum(hi, (qb[:, None] * block + block - 1).clamp(max=n - 1))
    touched = torch.zeros(tb, tb, dtype=torch.bool)
    ok = hi >= lo
    blo, bhi = lo // block, hi // block
    for off in range(0, 2):  # a range of <= 64 keys touches <= 2 blocks
        b = (blo + off).clamp(max=tb - 1)
        sel = ok & (b <= bhi)
        touched[qb[:, None].expand_as(b)[sel], b[sel]] = True
    cb = cols // block
    touched[:, cb] = True
    touched &= torch.tril(torch.ones(tb, tb, dtype=torch.bool))
    num = touched.sum(-1, dtype=torch.int32)
    order = torch.argsort((~touched).to(torch.int8), dim=-1, stable=True)

    def mask_mod(b, h, qi, ki):
        return (ki <= qi) & (col_sel[ki] | diag_sel[(qi - ki).clamp(0, n - 1)])

    bm = BlockMask.from_kv_blocks(num[None, None], order.to(torch.int32)[None,
                                                                        None],
                                  BLOCK_SIZE=block, mask_mod=mask_mod,
                                  seq_lengths=(n, n))
    t_mask = time.perf_counter() - t0

    flex = torch.compile(flex_attention)
    qq, kk, vv = (x[None, None] for x in (q, k, v))
    t0 = time.perf_counter()
    out = flex(qq, kk, vv, block_mask=bm)
    t_first = time.perf_counter() - t0
    times = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        out = flex(qq, kk, vv, block_mask=bm)
        times.append(time.perf_counter() - t0)
    t_flex = statistics.median(times)
    err = float(np.abs(out[0, 0].numpy() - ours).max())
    total_ours = idx["vs_index_s"] + idx["vs_attention_s"]
    print(json.dumps({
        "len": n, "torch": torch.__version__, "threads": a.threads,
        "block_mask_s": round(t_mask, 4), "flex_first_call_s":
        round(t_first, 3), "flex_s": round(t_flex, 4),
        "flex_total_s": round(t_mask + t_flex, 4),
        "kv_blocks": int(num.sum()), "tessera_total_s": round(total_ours, 4),
        "tessera_vs_flex": round((t_mask + t_flex) / total_ours, 2),
        "max_abs_difference": err}))
    return 0 if err < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
