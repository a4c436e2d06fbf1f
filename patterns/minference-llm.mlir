// Dynamic patterns in a Llama-3-8B-shaped model (32 heads, 8 kv heads,
// head_dim 128, bf16): layer 0 as MInference configures such a model
// (vertical-slash heads with its published budgets, StreamingLLM heads,
// block-sparse heads), layer 1 with FlexPrefill-style adaptive block top-k
// and Routing Transformer clusters. bench/gpu_dynamic.py checks and times
// it on a GPU; docs/patterns.md defines the dynamic leaves.
attn.model @minference_llm {
  attn.layer 0 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 19] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096, first_columns = 30, last_diagonals = 100>>
    attn.heads [20 to 27] = #attn.a_shape<sink = 4, before = 1023>
    attn.heads [28 to 31] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, top_k = 100>>
  }
  attn.layer 1 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 15] = #attn.intersect<#attn.causal, #attn.block_topk<block = 128, gamma = 0.9, min_blocks = 4, max_blocks = 512>>
    attn.heads [16 to 23] = #attn.intersect<#attn.causal, #attn.routing<clusters = 16, kmeans_iterations = 2>>
    attn.heads [24 to 31] = #attn.causal
  }
}
