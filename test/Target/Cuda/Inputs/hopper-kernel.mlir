// The Hopper kernel's compile check (hopper-kernel.test): a causal and an
// A-shape head at head_dim 128, and a layer of two patterns at head_dim 64.
attn.model @hopper {
  attn.layer 0 heads = 2 kv_heads = 1 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.causal
    attn.heads [1] = #attn.a_shape<sink = 4, before = 1024>
  }
  attn.layer 1 heads = 2 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0] = #attn.window<before = 512>
    attn.heads [1] = #attn.multi_diagonal<stride = 1024, width = 32>
  }
}
