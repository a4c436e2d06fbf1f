// The attention of transformers_test.py's small Llama-shaped model (4 heads,
// 2 kv heads, head_dim 64, 3 layers). Layer 0 is causal, so SDPA's own causal
// mask is its reference; layers 1 and 2 have sparse heads whose parameters
// matter at the test's lengths (prompts of up to 20 tokens).
attn.model @tiny_llama {
  attn.layer 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0 to 3] = #attn.causal
  }
  attn.layer 1 heads = 4 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0] = #attn.causal
    attn.heads [1] = #attn.a_shape<sink = 2, before = 3>
    attn.heads [2] = #attn.window<before = 4>
    attn.heads [3] = #attn.sink<3>
  }
  attn.layer 2 heads = 4 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0 to 3] = #attn.intersect<#attn.causal, #attn.union<#attn.window<before = 1>, #attn.strided_shards<shards = 2, block = 2>>>
  }
}
