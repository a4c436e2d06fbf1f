#!/usr/bin/env python3
"""FlexAttention on the A-shape head of bench/runs.sh, on the CPU.

For each length: create_block_mask (timed, and the bytes of the BlockMask's
tensors: O((N / 64)^2) index lists), then flex_attention (torch.compile'd;
the first call is reported apart) on one head, head_dim 64, fp32. Stops at
the first length that fails (out of memory or an error) and reports why.
Prints one JSON line per length.

  bench/flex_ashape.py [LENGTHS...] [--compile-mask] [--threads 2]
"""

import argparse
import json
import os
import resource
import sys
import time

import torch
from torch.nn.attention.flex_attention import create_block_mask, flex_attention

SINK, BEFORE = 64, 1024


def mask_mod(b, h, q, kv):
    causal = kv <= q
    return causal & ((kv < SINK) | (q - kv <= BEFORE))


def mask_bytes(bm):
    total = 0
    for name in ("kv_num_blocks", "kv_indices", "full_kv_num_blocks",
                 "full_kv_indices", "q_num_blocks", "q_indices",
                 "full_q_num_blocks", "full_q_indices"):
        t = getattr(bm, name, None)
        if t is not None:
            total += t.numel() * t.element_size()
    return total


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lengths", type=int, nargs="*",
                    default=[32768, 131072, 524288, 1048576])
    ap.add_argument("--compile-mask", action="store_true",
                    help="build the BlockMask with _compile=True")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    flex = torch.compile(flex_attention)
    for i, L in enumerate(args.lengths):
        # Progress on stderr when it is a terminal (TESSERA_PROGRESS=0: off).
        if os.environ.get("TESSERA_PROGRESS") == "1" or (
                sys.stderr.isatty() and
                os.environ.get("TESSERA_PROGRESS") != "0"):
            print(f"[flex_ashape] {i}/{len(args.lengths)}: {L} tokens",
                  file=sys.stderr, flush=True)
        row = {"len": L, "compile_mask": args.compile_mask,
               "torch": torch.__version__}
        try:
            t = time.perf_counter()
            bm = create_block_mask(mask_mod, 1, 1, L, L, device="cpu",
                                   BLOCK_SIZE=64, _compile=args.compile_mask)
            row["create_block_mask_s"] = time.perf_counter() - t
            row["block_mask_bytes"] = mask_bytes(bm)
            g = torch.Generator().manual_seed(0)
            q, k, v = (torch.randn(1, 1, L, 64, generator=g) for _ in range(3))
            t = time.perf_counter()
            flex(q, k, v, block_mask=bm)
            row["flex_first_call_s"] = time.perf_counter() - t
            t = time.perf_counter()
            flex(q, k, v, block_mask=bm)
            row["flex_s"] = time.perf_counter() - t
        except (RuntimeError, MemoryError) as e:
            row["failed"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        row["max_rss_gib"] = resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 2**20
        print(json.dumps(row), flush=True)
        if "failed" in row:
            break
    return 0


if __name__ == "__main__":
    sys.exit(main())
