// The kernel variants the emulator test runs beyond the shipped bundles:
// f16 and bf16, head_dim 64, 96 (padded rows), 128 and 256 (Q resident in
// dynamic shared memory, 64-row blocks), GQA, skipped heads, head-dependent
// patterns, empty rows (the horizontal stripe's rows past 20, the block list's
// unlisted rows), diagonal-only rows.
attn.model @emulation {
  attn.layer 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0] = #attn.causal
    attn.heads [1] = #attn.a_shape<sink = 4, before = 40>
    attn.heads [2] = #attn.window<before = 0>
    attn.heads [3] = #attn.skip
  }
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.multi_diagonal<stride = 32, width = 2>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.strided_shards<shards = 2, block = 16>>
  }
  attn.layer 2 heads = 2 kv_heads = 2 head_dim = 128 dtype = f16 {
    attn.heads [0] = #attn.horizontal_stripe<ranges = [0, 20]>
    attn.heads [1] = #attn.block_sparse<block_q = 32, block_k = 32, blocks = [0, 0, 2, 1, 3, 3]>
  }
  attn.layer 3 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.shifted_groups<size = 48, shift = 24>
  }
  attn.layer 4 heads = 3 kv_heads = 3 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.dense
    attn.heads [1] = #attn.union<#attn.grid<stride = 16, vertical_width = 1, slash_width = 2>, #attn.vertical_stripe<ranges = [0, 3, 9, 11, 40, 44, 60, 61, 90, 99]>>
    attn.heads [2] = #attn.difference<#attn.dense, #attn.window<before = 30, after = 30>>
  }
  attn.layer 5 heads = 2 kv_heads = 1 head_dim = 96 dtype = f16 {
    attn.heads [0] = #attn.causal
    attn.heads [1] = #attn.window<before = 40, after = 8>
  }
  attn.layer 6 heads = 2 kv_heads = 1 head_dim = 256 dtype = bf16 {
    attn.heads [0] = #attn.a_shape<sink = 4, before = 40>
    attn.heads [1] = #attn.dense
  }
}
