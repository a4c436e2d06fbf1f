#!/usr/bin/env python3
"""Writes a pattern file with one layer of 4096 heads (the verifier's most)
for the budget tests: heads 4i are multi_diagonal<stride = 3>, 4i + 1
causal, 4i + 2 grid, 4i + 3 strided_shards<shards = 1024, block = 1> (a
different shard for each, so every one of those 1024 heads is drawn on its
own)."""
heads = 4096
lines = []
patterns = ["#attn.multi_diagonal<stride = 3>", "#attn.causal",
            "#attn.grid<stride = 4, vertical_width = 1, slash_width = 1>",
            "#attn.strided_shards<shards = 1024, block = 1>"]
for i, p in enumerate(patterns):
    ids = ", ".join(str(h) for h in range(i, heads, len(patterns)))
    lines.append(f"    attn.heads [{ids}] = {p}")
print("attn.model @many {")
print(f"  attn.layer 0 heads = {heads} kv_heads = 1 head_dim = 64 "
      "dtype = bf16 {")
print("\n".join(lines))
print("  }")
print("}")
