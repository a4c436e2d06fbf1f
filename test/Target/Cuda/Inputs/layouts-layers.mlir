// Three layers with layouts (layouts.test): the tables' entries without the
// permuted groups' heads follow the layers', one per layer, in order; a
// layer whose every head is permuted launches no attention slot there.
attn.model @layers {
  attn.layer 0 heads = 4 kv_heads = 4 head_dim = 64 dtype = bf16 {
    attn.heads [0 to 1] = #attn.multi_diagonal<stride = 64, width = 8>
    attn.heads [2 to 3] = #attn.window<before = 32, after = 32>
  }
  attn.layer 1 heads = 4 kv_heads = 4 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.window<before = 32, after = 32>
    attn.heads [1 to 3] = #attn.grid<stride = 64, vertical_width = 8, slash_width = 8>
  }
  attn.layer 2 heads = 4 kv_heads = 4 head_dim = 64 dtype = bf16 {
    attn.heads [0 to 3] = #attn.grid<stride = 64, vertical_width = 8, slash_width = 8>
  }
}
