// RUN: attn-opt %s --attn-fuse-heads | FileCheck %s

// Heads with the same head-independent pattern merge, whatever op named them.
// CHECK-LABEL: attn.model @merge
// CHECK: attn.layer 0
// CHECK-NEXT: attn.heads [0, 2, 5] = #attn.causal
// CHECK-NEXT: attn.heads [1, 3] = #attn.window<before = 8>
// CHECK-NEXT: attn.heads [4] = #attn.skip
// CHECK-NEXT: }
attn.model @merge {
  attn.layer 0 heads = 6 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [5, 0] = #attn.causal
    attn.heads [1] = #attn.window<before = 8>
    attn.heads [2] = #attn.causal
    attn.heads [4] = #attn.skip
    attn.heads [3] = #attn.window<before = 8>
  }
}

// Heads of one strided-shards attribute split by the shard they see: with 3
// shards and offset 1, heads 0 and 3 see shard 1, heads 1 and 4 shard 2,
// heads 2 and 5 shard 0.
// CHECK-LABEL: attn.model @shards
// CHECK: attn.heads [0, 3] = #attn.strided_shards<shards = 3, offset = 1>
// CHECK-NEXT: attn.heads [1, 4] = #attn.strided_shards<shards = 3, offset = 1>
// CHECK-NEXT: attn.heads [2, 5] = #attn.strided_shards<shards = 3, offset = 1>
attn.model @shards {
  attn.layer 0 heads = 6 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1, 2, 3, 4, 5] = #attn.strided_shards<shards = 3, offset = 1>
  }
}

// Shifted groups split into the lower and the upper half of the heads, also
// inside combinators; an unshifted one (shift = 0) depends on no head.
// CHECK-LABEL: attn.model @groups
// CHECK: attn.heads [0, 1] = #attn.intersect<#attn.causal, #attn.shifted_groups<size = 8, shift = 4>>
// CHECK-NEXT: attn.heads [2, 3] = #attn.intersect<#attn.causal, #attn.shifted_groups<size = 8, shift = 4>>
// CHECK: attn.layer 1
// CHECK-NEXT: attn.heads [0 to 3] = #attn.shifted_groups<size = 8, shift = 0>
attn.model @groups {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1, 2, 3] = #attn.intersect<#attn.causal, #attn.shifted_groups<size = 8, shift = 4>>
  }
  attn.layer 1 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1, 2, 3] = #attn.shifted_groups<size = 8, shift = 0>
  }
}
