// A toy layer with small parameters, so that attn-viz pictures of a few
// dozen tokens show each pattern's shape (make demo prints some of them).
attn.model @tiny_mix {
  attn.layer 0 heads = 6 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.a_shape<sink = 2, before = 4>
    attn.heads [1] = #attn.multi_diagonal<stride = 8, width = 1>
    attn.heads [2] = #attn.grid<stride = 8, vertical_width = 1, slash_width = 1>
    attn.heads [3, 4] = #attn.intersect<#attn.causal, #attn.union<#attn.window<before = 2>, #attn.strided_shards<shards = 2, block = 4>>>
    attn.heads [5] = #attn.shifted_groups<size = 8, shift = 4>
  }
}
