// The attention of examples/training/train_sparse.py's small Llama-shaped
// model (4 heads, 2 kv heads, head_dim 64, 2 layers): S2-Attention's layout
// in layer 0 (each head its own strided shard of key blocks, joined to a
// local window, causal) and LongLoRA's shifted groups in layer 1 (the upper
// half of the heads shifted by half a group, causal).
attn.model @train_sparse {
  attn.layer 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0 to 3] = #attn.intersect<#attn.causal, #attn.union<#attn.window<before = 8>, #attn.strided_shards<shards = 4, block = 4>>>
  }
  attn.layer 1 heads = 4 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0 to 3] = #attn.intersect<#attn.causal, #attn.shifted_groups<size = 16, shift = 8>>
  }
}
