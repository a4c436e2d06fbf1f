// 16 different patterns in one layer, at head_dim 128 and 256 (split.test).
attn.model @sixteen {
  attn.layer 0 heads = 16 kv_heads = 4 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.causal
    attn.heads [1] = #attn.a_shape<sink = 4, before = 40>
    attn.heads [2] = #attn.window<before = 100, after = 8>
    attn.heads [3] = #attn.multi_diagonal<stride = 32, width = 2>
    attn.heads [4] = #attn.intersect<#attn.causal, #attn.strided_shards<shards = 2, block = 16>>
    attn.heads [5] = #attn.horizontal_stripe<ranges = [0, 20]>
    attn.heads [6] = #attn.block_sparse<block_q = 32, block_k = 32, blocks = [0, 0, 2, 1, 3, 3]>
    attn.heads [7] = #attn.shifted_groups<size = 48, shift = 24>
    attn.heads [8] = #attn.union<#attn.grid<stride = 16, vertical_width = 1, slash_width = 2>, #attn.vertical_stripe<ranges = [0, 3, 9, 11, 40, 44, 60, 61, 90, 99]>>
    attn.heads [9] = #attn.difference<#attn.dense, #attn.window<before = 30, after = 30>>
    attn.heads [10] = #attn.grid<stride = 64, vertical_width = 4, slash_width = 4>
    attn.heads [11] = #attn.intersect<#attn.causal, #attn.union<#attn.window<before = 200>, #attn.vertical_stripe<ranges = [0, 64, 1000, 1100]>>>
    attn.heads [12] = #attn.strided_shards<shards = 4, block = 64>
    attn.heads [13] = #attn.union<#attn.a_shape<sink = 64, before = 512>, #attn.multi_diagonal<stride = 128, width = 4>>
    attn.heads [14] = #attn.intersect<#attn.causal, #attn.shifted_groups<size = 256, shift = 128>>
    attn.heads [15] = #attn.difference<#attn.causal, #attn.multi_diagonal<stride = 7, width = 1>>
  }
  attn.layer 1 heads = 16 kv_heads = 4 head_dim = 256 dtype = bf16 {
    attn.heads [0] = #attn.causal
    attn.heads [1] = #attn.a_shape<sink = 4, before = 40>
    attn.heads [2] = #attn.window<before = 100, after = 8>
    attn.heads [3] = #attn.multi_diagonal<stride = 32, width = 2>
    attn.heads [4] = #attn.intersect<#attn.causal, #attn.strided_shards<shards = 2, block = 16>>
    attn.heads [5] = #attn.horizontal_stripe<ranges = [0, 20]>
    attn.heads [6] = #attn.block_sparse<block_q = 32, block_k = 32, blocks = [0, 0, 2, 1, 3, 3]>
    attn.heads [7] = #attn.shifted_groups<size = 48, shift = 24>
    attn.heads [8] = #attn.union<#attn.grid<stride = 16, vertical_width = 1, slash_width = 2>, #attn.vertical_stripe<ranges = [0, 3, 9, 11, 40, 44, 60, 61, 90, 99]>>
    attn.heads [9] = #attn.difference<#attn.dense, #attn.window<before = 30, after = 30>>
    attn.heads [10] = #attn.grid<stride = 64, vertical_width = 4, slash_width = 4>
    attn.heads [11] = #attn.intersect<#attn.causal, #attn.union<#attn.window<before = 200>, #attn.vertical_stripe<ranges = [0, 64, 1000, 1100]>>>
    attn.heads [12] = #attn.strided_shards<shards = 4, block = 64>
    attn.heads [13] = #attn.union<#attn.a_shape<sink = 64, before = 512>, #attn.multi_diagonal<stride = 128, width = 4>>
    attn.heads [14] = #attn.intersect<#attn.causal, #attn.shifted_groups<size = 256, shift = 128>>
    attn.heads [15] = #attn.difference<#attn.causal, #attn.multi_diagonal<stride = 7, width = 1>>
  }
}
