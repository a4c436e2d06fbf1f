// The dynamic groups of DynamicEmulatorTest: each family alone and under
// the combinators (the walks over the index, the gathered columns, and the
// static runs with the leaf read as skip), two dtypes, head dims 64, 96
// and 128.
attn.model @dynamic_emulation {
  attn.layer 0 heads = 6 kv_heads = 3 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 16, vertical = 6, slash = 9, first_columns = 4, last_diagonals = 8>>
    attn.heads [1] = #attn.union<#attn.a_shape<sink = 2, before = 20>, #attn.vertical_slash<last_q = 24, vertical = 40, slash = 30, first_columns = 2, last_diagonals = 4>>
    attn.heads [2] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, gamma = 0.8, min_blocks = 1, max_blocks = 3>>
    attn.heads [3] = #attn.union<#attn.window<before = 8>, #attn.block_topk<block = 64, top_k = 2>>
    attn.heads [4] = #attn.intersect<#attn.causal, #attn.routing<clusters = 4, kmeans_iterations = 2>>
    attn.heads [5] = #attn.routing<clusters = 3>
  }
  attn.layer 1 heads = 3 kv_heads = 1 head_dim = 128 dtype = f16 {
    attn.heads [0] = #attn.difference<#attn.causal, #attn.vertical_slash<last_q = 8, vertical = 10, slash = 20>>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 150, slash = 100, first_columns = 30, last_diagonals = 50>>
    attn.heads [2] = #attn.window<before = 4>
  }
  // Routing where the pattern allows pairs outside the clusters: the
  // segments' rows merged with the rest of the pattern by their LSE.
  attn.layer 2 heads = 2 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.union<#attn.window<before = 8>, #attn.intersect<#attn.causal, #attn.routing<clusters = 4, kmeans_iterations = 1>>>
    attn.heads [1] = #attn.difference<#attn.causal, #attn.routing<clusters = 3, kmeans_iterations = 2>>
  }
  // Block top-k with FlexPrefill's per-head choice (tau > 0): kv heads 0
  // and 2 planted (sinks and a diagonal: vertical-slash-like), 1 and 3
  // leaning to the first key block (query-aware), so that each group's
  // heads take both modes.
  attn.layer 3 heads = 4 kv_heads = 4 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, gamma = 0.9, tau = 0.15>>
    attn.heads [2, 3] = #attn.union<#attn.window<before = 8>, #attn.block_topk<block = 64, gamma = 0.8, min_blocks = 1, max_blocks = 2, tau = 0.15>>
  }
  // Head_dim 96 (rows padded to 104 elements; every Q fragment in
  // registers): a contiguous and a gathered walk.
  attn.layer 4 heads = 2 kv_heads = 1 head_dim = 96 dtype = f16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, top_k = 2>>
    attn.heads [1] = #attn.union<#attn.window<before = 8>, #attn.vertical_slash<last_q = 16, vertical = 8, slash = 8, first_columns = 2, last_diagonals = 4>>
  }
}
