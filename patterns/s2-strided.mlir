// An S2-Attention-style model (4 layers, 16 query heads, 4 key/value heads,
// head_dim 128, fp16). In the sparse layers each head sees one of 8 strided
// shards of the context in blocks of 64 tokens (heads h and h + 8 share a
// shard, and together the heads cover every key), plus a dense local window
// of 512 tokens, all causal. As in the paper's hybrid design, the first layer
// stays dense.
//
//   attn-opt patterns/s2-strided.mlir --attn-report="q-len=4096" -o /dev/null
attn.model @s2_strided {
  attn.layer 0 heads = 16 kv_heads = 4 head_dim = 128 dtype = f16 {
    attn.heads [0 to 15] = #attn.causal
  }
  attn.layer 1 heads = 16 kv_heads = 4 head_dim = 128 dtype = f16 {
    attn.heads [0 to 15] = #attn.intersect<#attn.causal, #attn.union<#attn.window<before = 512>, #attn.strided_shards<shards = 8, block = 64>>>
  }
  attn.layer 2 heads = 16 kv_heads = 4 head_dim = 128 dtype = f16 {
    attn.heads [0 to 15] = #attn.intersect<#attn.causal, #attn.union<#attn.window<before = 512>, #attn.strided_shards<shards = 8, block = 64, offset = 3>>>
  }
  attn.layer 3 heads = 16 kv_heads = 4 head_dim = 128 dtype = f16 {
    attn.heads [0 to 15] = #attn.intersect<#attn.causal, #attn.union<#attn.window<before = 512>, #attn.strided_shards<shards = 8, block = 64, offset = 5>>>
  }
}
