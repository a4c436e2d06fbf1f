#!/usr/bin/env python3
"""PyTorch on the same inputs and mask as tessera-cpu-bench --dump.

Runs, on the CPU with the same thread count:
  * torch.nn.functional.scaled_dot_product_attention, dense (no mask);
  * FlexAttention (torch.compile'd) with a BlockMask built from the same
    mask: its full/partial/empty 64 x 64 blocks are checked to equal
    Tessera's tile classes, and its output is checked against Tessera's.
Prints one JSON line.
"""

import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention


def median_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    meta = json.load(open(os.path.join(args.dump, "meta.json")))
    L, H, D, B = meta["len"], meta["heads"], meta["head_dim"], meta["block"]

    def load(name, dtype, shape):
        a = np.fromfile(os.path.join(args.dump, name), dtype=dtype)
        return torch.from_numpy(a.reshape(shape))

    # [1, L, H, D] -> [1, H, L, D] as PyTorch's attention wants.
    q, k, v, o_ours = (load(n + ".f32", np.float32, (1, L, H, D)).transpose(1, 2).contiguous()
                       for n in ("q", "k", "v", "o"))
    mask = load("mask.u8", np.uint8, (H, L, L)).bool()
    tiles = load("tiles.i8", np.int8, (H, (L + B - 1) // B, (L + B - 1) // B))

    def mask_mod(b, h, qi, kv):
        return mask[h, qi, kv]

    block_mask = create_block_mask(mask_mod, 1, H, L, L, device="cpu",
                                   BLOCK_SIZE=B)
    # Identical block structure: partial blocks in kv_num_blocks, full ones in
    # full_kv_num_blocks.
    full = block_mask.full_kv_num_blocks[0].sum().item()
    partial = block_mask.kv_num_blocks[0].sum().item()
    ours_full = (tiles == 2).sum().item()
    ours_partial = (tiles == 1).sum().item()
    if (full, partial) != (ours_full, ours_partial):
        print(f"block masks differ: flex full/partial {full}/{partial}, "
              f"tessera {ours_full}/{ours_partial}", file=sys.stderr)
        return 1

    flex = torch.compile(flex_attention)
    t0 = time.perf_counter()
    o_flex = flex(q, k, v, block_mask=block_mask)
    compile_s = time.perf_counter() - t0
    err = ((o_flex - o_ours).abs().max() / o_ours.abs().max()).item()
    t_flex = median_time(lambda: flex(q, k, v, block_mask=block_mask), args.repeats)
    t_sdpa = median_time(
        lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v),
        args.repeats)
    out = {"len": L, "heads": H, "sdpa_dense_s": t_sdpa,
           "flex_s": t_flex, "flex_first_call_s": compile_s,
           "flex_vs_tessera_rel_err": err,
           "blocks_full": full, "blocks_partial": partial,
           "torch": torch.__version__}
    if meta.get("backward"):
        out.update(backward(args, load, L, H, D, q, k, v, mask, block_mask,
                            flex, t_flex, t_sdpa))
    print(json.dumps(out))
    return 0


def backward(args, load, L, H, D, q, k, v, mask, block_mask, flex, t_flex,
             t_sdpa):
    """Backward timings, (forward + backward) - forward, and the masked SDPA's
    gradients against Tessera's (max |a - b| / max |b| over dq, dk, dv)."""
    do, dq, dk, dv = (load(n + ".f32", np.float32, (1, L, H, D)).transpose(1, 2).contiguous()
                      for n in ("do", "dq", "dk", "dv"))
    qg, kg, vg = (x.detach().clone().requires_grad_(True) for x in (q, k, v))
    sdpa = torch.nn.functional.scaled_dot_product_attention
    attn_mask = mask.unsqueeze(0)

    def fwd_bwd(fn):
        def run():
            for x in (qg, kg, vg):
                x.grad = None
            fn().backward(do)
        return run

    out = {"sdpa_dense_bwd_s": median_time(fwd_bwd(lambda: sdpa(qg, kg, vg)), args.repeats) - t_sdpa}
    # The masked math path holds H x L x L probabilities and their gradient
    # in fp32: 8 GiB at 16K tokens and 4 heads; past 8K it is left out.
    if L <= 8192:
        masked = fwd_bwd(lambda: sdpa(qg, kg, vg, attn_mask=attn_mask))
        masked()
        out["sdpa_masked_vs_tessera_grad_rel_err"] = max(
            ((g - ours).abs().max() / ours.abs().max()).item()
            for g, ours in ((qg.grad, dq), (kg.grad, dk), (vg.grad, dv)))
        t_masked_fwd = median_time(lambda: sdpa(q, k, v, attn_mask=attn_mask), args.repeats)
        out["sdpa_masked_bwd_s"] = median_time(masked, args.repeats) - t_masked_fwd
    try:
        flex_run = fwd_bwd(lambda: flex(qg, kg, vg, block_mask=block_mask))
        flex_run()  # compiles the backward
        out["flex_bwd_s"] = median_time(flex_run, args.repeats) - t_flex
    except NotImplementedError as e:
        out["flex_bwd_s"] = None
        out["flex_bwd_missing"] = str(e).split(".")[0]
    return out


if __name__ == "__main__":
    sys.exit(main())
