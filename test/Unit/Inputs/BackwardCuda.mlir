// The layers FakeDriverBackward runs through the runtime's CUDA backward
// (the emitted kernels under the emulator, behind the fake driver): f16 at
// head_dim 64 (GQA 2:1, a skipped head in the second group) and bf16 at
// head_dim 128 (GQA 4:1, shards, a block list, shifted groups, a
// horizontal stripe's rows without keys); partial and full tiles.
attn.model @backward_cuda {
  attn.layer 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0] = #attn.causal
    attn.heads [1] = #attn.a_shape<sink = 4, before = 40>
    attn.heads [2] = #attn.multi_diagonal<stride = 32, width = 2>
    attn.heads [3] = #attn.skip
  }
  attn.layer 1 heads = 4 kv_heads = 1 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.strided_shards<shards = 2, block = 16>>
    attn.heads [1] = #attn.block_sparse<block_q = 32, block_k = 32, blocks = [0, 0, 2, 1, 3, 3]>
    attn.heads [2] = #attn.shifted_groups<size = 48, shift = 24>
    attn.heads [3] = #attn.horizontal_stripe<ranges = [0, 20]>
  }
}
