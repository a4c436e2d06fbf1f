#!/usr/bin/env python3
"""Writes the indices that tessera-dynamic-dump built for its planted case
as static pattern files (the specialisation of Schedule/Specialize.h), for
attn-viz to draw in docs/patterns.md.

  index-patterns.py DUMPDIR OUTDIR
"""
import json
import os
import sys

dump, out = sys.argv[1], sys.argv[2]
idx = json.load(open(os.path.join(dump, "planted", "index.json")))
vs = idx["vertical_slash"]
ranges = []
for c in vs["columns"]:
    if ranges and ranges[-1][1] == c:
        ranges[-1][1] = c + 1
    else:
        ranges.append([c, c + 1])
stripe = ", ".join(f"{a}, {b}" for a, b in ranges)
diags = ", ".join(str(d) for d in vs["diagonals"])
bt = idx["block_topk_gamma"]
blocks = ", ".join(f"{i}, {b}" for i, row in enumerate(bt["blocks"])
                   for b in row)


def model(pattern):
    return ("attn.model @index {\n  attn.layer 0 heads = 1 kv_heads = 1 "
            "head_dim = 32 dtype = f16 {\n    attn.heads [0] = "
            f"{pattern}\n  }}\n}}\n")


with open(os.path.join(out, "vertical-slash.mlir"), "w") as f:
    f.write(model("#attn.intersect<#attn.causal, #attn.union<"
                  f"#attn.vertical_stripe<ranges = [{stripe}]>, "
                  f"#attn.multi_diagonal<offsets = [{diags}], width = 0>>>"))
with open(os.path.join(out, "block-topk.mlir"), "w") as f:
    f.write(model("#attn.intersect<#attn.causal, #attn.block_sparse<"
                  f"block_q = {bt['block']}, block_k = {bt['block']}, "
                  f"blocks = [{blocks}]>>"))
