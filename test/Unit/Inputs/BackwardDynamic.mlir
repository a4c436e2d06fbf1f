// The dynamic heads' CUDA backward (DynamicBackward.cuh; FakeDriverBackward's
// Dynamic* tests): vertical-slash and block top-k heads under causality and
// in a union with a window, routing heads alone and under causality, beside
// a static head on a shared kv head.
// The tests plant the keys so that each head's index is known: the
// vertical-slash heads keep their first columns (forced), three planted
// columns and their last diagonals (forced); the block top-k heads keep
// key blocks 0 and 2 for every query block.
attn.model @backward_dynamic {
  // f16, head_dim 64, GQA 2:1: kv head 0 serves a vertical-slash head and a
  // static causal head, kv head 1 two block top-k heads.
  attn.layer 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 16, vertical = 5, slash = 6, first_columns = 2, last_diagonals = 6>>
    attn.heads [1] = #attn.causal
    attn.heads [2] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, top_k = 2>>
    attn.heads [3] = #attn.union<#attn.window<before = 8>, #attn.block_topk<block = 64, top_k = 2>>
  }
  // bf16, head_dim 128: a vertical-slash head in a union with a window
  // (pairs outside the leaf: the static runs of `without`), a block top-k
  // head under causality.
  attn.layer 1 heads = 2 kv_heads = 2 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.union<#attn.window<before = 4>, #attn.vertical_slash<last_q = 8, vertical = 5, slash = 3, first_columns = 2, last_diagonals = 3>>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, top_k = 2>>
  }
  // f16, head_dim 64, GQA 2:1: routing heads that take the engine's
  // centroids (four clusters), alone (kv head 0) and under causality (kv
  // heads 0 and 1); kv head 1 also serves a static causal head.
  attn.layer 2 heads = 4 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0] = #attn.routing<clusters = 4>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.routing<clusters = 4>>
    attn.heads [2] = #attn.causal
    attn.heads [3] = #attn.intersect<#attn.causal, #attn.routing<clusters = 4>>
  }
  // f16, head_dim 64, GQA 2:1: routing whose pattern allows pairs outside
  // its clusters (rtRest's merge): in a union with a window (heads 0 and
  // 3, on both kv heads), the right of a difference (head 1: causal pairs
  // across clusters); kv head 1 also serves a static causal head.
  attn.layer 3 heads = 4 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0] = #attn.union<#attn.window<before = 8>, #attn.intersect<#attn.causal, #attn.routing<clusters = 4>>>
    attn.heads [1] = #attn.difference<#attn.causal, #attn.routing<clusters = 4>>
    attn.heads [2] = #attn.causal
    attn.heads [3] = #attn.union<#attn.window<before = 8>, #attn.intersect<#attn.causal, #attn.routing<clusters = 4>>>
  }
}
