// Layers for the context-parallel tests (distributed.test): an A-shape
// layer (a rank needs its own shard, its predecessor's last keys and the
// sink's shard), a causal one, and a mix with grouped-query heads.
attn.model @distributed {
  attn.layer 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1, 2, 3] = #attn.a_shape<sink = 4, before = 24>
  }
  attn.layer 1 heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1, 2, 3] = #attn.causal
  }
  attn.layer 2 heads = 8 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0, 1] = #attn.causal
    attn.heads [2, 3, 4] = #attn.a_shape<sink = 8, before = 40>
    attn.heads [5] = #attn.window<before = 16, after = 16>
    attn.heads [6, 7] = #attn.shifted_groups<size = 32, shift = 16>
  }
}
