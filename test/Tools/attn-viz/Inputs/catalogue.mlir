// One head per pattern, for the attn-viz tests in the folder above.
attn.model @catalogue {
  attn.layer 0 heads = 16 kv_heads = 4 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.dense
    attn.heads [1] = #attn.causal
    attn.heads [2] = #attn.window<before = 1, after = 1>
    attn.heads [3] = #attn.sink<2>
    attn.heads [4] = #attn.a_shape<sink = 1, before = 1>
    attn.heads [5] = #attn.multi_diagonal<stride = 3>
    attn.heads [6] = #attn.multi_diagonal<offsets = [-3, 2]>
    attn.heads [7] = #attn.vertical_stripe<ranges = [1, 3]>
    attn.heads [8] = #attn.vertical_stripe<period = 3, width = 1, phase = 1>
    attn.heads [9] = #attn.horizontal_stripe<ranges = [0, 1, 3, 4]>
    attn.heads [10] = #attn.grid<stride = 4, vertical_width = 1, slash_width = 1>
    attn.heads [11, 12] = #attn.strided_shards<shards = 2, block = 2>
    attn.heads [13] = #attn.skip
    attn.heads [14] = #attn.block_sparse<block_q = 2, block_k = 2, blocks = [0, 0, 1, 0, 1, 1]>
    attn.heads [15] = #attn.skip
  }
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.shifted_groups<size = 3, shift = 1>
  }
  attn.layer 2 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.difference<#attn.causal, #attn.window<before = 1>>
  }
}
