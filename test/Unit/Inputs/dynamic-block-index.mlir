// Caller-provided block indices on CUDA (tessera_bi_attend): the
// DynamicEmulatorBlockIndex tests run every layer's block_index groups
// under the emulator against float64 (random lists per batch entry and
// head, empty rows among them), FakeDriverBlockIndex runs layer 0
// through the runtime's CUDA path on the fake device against the CPU
// context. Layer 0: the lists alone and composed with static patterns,
// GQA, block_q = block_k = 64; layer 1 (head_dim 128, f16): block_q = 128
// and block_k = 192, so that a query tile's rows lie in two query blocks
// where Nk - Nq is not a multiple of 128, and key blocks span three tiles.
attn.model @dynamic_block_index {
  attn.layer 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.block_index<block_q = 64, block_k = 64>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.block_index<block_q = 64, block_k = 64>>
    attn.heads [2] = #attn.union<#attn.window<before = 5>, #attn.block_index<block_q = 64, block_k = 64>>
    attn.heads [3] = #attn.difference<#attn.block_index<block_q = 64, block_k = 64>, #attn.sink<3>>
  }
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 128 dtype = f16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.block_index<block_q = 128, block_k = 192>>
    attn.heads [1] = #attn.block_index<block_q = 128, block_k = 192>
  }
}
