// Dynamic groups that bundles cannot hold (test/Target/Cuda/dynamic.mlir).
attn.model @bad {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.block_topk<block = 96, top_k = 4>
    attn.heads [1] = #attn.union<#attn.vertical_slash<last_q = 8, vertical = 4>, #attn.block_topk<block = 64, top_k = 2>>
    attn.heads [2, 3] = #attn.window<before = 4>
  }
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 256 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 8, vertical = 4, slash = 4>>
    attn.heads [1] = #attn.causal
  }
}
