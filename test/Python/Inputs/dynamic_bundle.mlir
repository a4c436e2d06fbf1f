// Dynamic groups through a bundle and the runtime (dynamic-bundle.test).
attn.model @dynamic_bundle {
  attn.layer 0 heads = 6 kv_heads = 3 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 16, vertical = 12, slash = 20, first_columns = 4, last_diagonals = 8>>
    attn.heads [1] = #attn.union<#attn.window<before = 8>, #attn.block_topk<block = 64, top_k = 2>>
    attn.heads [2] = #attn.intersect<#attn.causal, #attn.routing<clusters = 3>>
    attn.heads [3] = #attn.routing<clusters = 4, kmeans_iterations = 2>
    attn.heads [4] = #attn.difference<#attn.causal, #attn.block_topk<block = 64, gamma = 0.5, min_blocks = 1>>
    attn.heads [5] = #attn.causal
  }
  // Vertical-slash joined to static parts other than causality: the index
  // specialised and run as one program through the executor.
  attn.layer 1 heads = 3 kv_heads = 1 head_dim = 64 dtype = f16 {
    attn.heads [0] = #attn.union<#attn.window<before = 8>, #attn.vertical_slash<last_q = 16, vertical = 8, slash = 12>>
    attn.heads [1] = #attn.intersect<#attn.window<before = 40>, #attn.vertical_slash<last_q = 16, vertical = 10, slash = 6, first_columns = 2>>
    attn.heads [2] = #attn.union<#attn.window<before = 8>, #attn.routing<clusters = 3, kmeans_iterations = 1>>
  }
  // Block top-k with FlexPrefill's per-head choice (tau > 0): in each group
  // one head planted for each mode (dynamic_bundle_test.py).
  attn.layer 2 heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, gamma = 0.9, tau = 0.04>>
    attn.heads [2, 3] = #attn.union<#attn.window<before = 8>, #attn.block_topk<block = 64, gamma = 0.8, min_blocks = 1, max_blocks = 2, tau = 0.04>>
  }
}
