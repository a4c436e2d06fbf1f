"""Writes a pattern file whose head pattern nests union / intersect /
difference `depth` levels deep (argv[1]) to stdout."""
import sys

depth = int(sys.argv[1])
kinds = ["union", "intersect", "difference"]
p = "#attn.causal"
for i in range(depth):
    k = kinds[i % 3]
    p = f"#attn.{k}<#attn.window<before = {i % 7}>, {p}>"
print("attn.model @deep {")
print("  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {")
print(f"    attn.heads [0] = {p}")
print("  }")
print("}")
