// The backward kernels' compile check (backward-kernel.test): causal heads
// (GQA 2:1) at head_dim 64 (f16) and 128 (bf16).
attn.model @backward {
  attn.layer 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = f16 {
    attn.heads [0, 1] = #attn.causal
  }
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 128 dtype = bf16 {
    attn.heads [0, 1] = #attn.causal
  }
}
