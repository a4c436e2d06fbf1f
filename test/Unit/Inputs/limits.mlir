// Parameters at the documented limit (2^40) whose products or sums pass it:
// they compile, the runtime accepts them, and the answers follow the
// reference semantics.
attn.model @limits {
  attn.layer 0 heads = 2 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.strided_shards<shards = 1099511627776, block = 1099511627776>
  }
  attn.layer 1 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.strided_shards<shards = 3, block = 1099511627776>
  }
  attn.layer 2 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.multi_diagonal<offsets = [1099511627776], width = 1099511627776>
  }
  attn.layer 3 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.window<before = 8>
  }
}
