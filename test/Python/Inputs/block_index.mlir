// Block-index heads for block-index.test: the caller's block lists alone
// and composed with static patterns (heads 1-3), next to a static head
// (4), with GQA (6 heads over 3 kv heads); block_q != block_k (layer 1);
// two block sizes in one layer, which a call refuses (layer 2).
attn.model @block_index {
  attn.layer 0 heads = 6 kv_heads = 3 head_dim = 64 dtype = bf16 {
    attn.heads [0, 5] = #attn.block_index<block_q = 64, block_k = 64>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.block_index<block_q = 64, block_k = 64>>
    attn.heads [2] = #attn.union<#attn.window<before = 5>, #attn.block_index<block_q = 64, block_k = 64>>
    attn.heads [3] = #attn.difference<#attn.block_index<block_q = 64, block_k = 64>, #attn.sink<3>>
    attn.heads [4] = #attn.causal
  }
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.intersect<#attn.causal, #attn.block_index<block_q = 128, block_k = 64>>
  }
  attn.layer 2 heads = 2 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.block_index<block_q = 64, block_k = 64>
    attn.heads [1] = #attn.block_index<block_q = 128, block_k = 128>
  }
}
