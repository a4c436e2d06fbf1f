// RUN: attn-opt %s | attn-opt | FileCheck %s
// RUN: attn-opt %s --mlir-print-op-generic | attn-opt | FileCheck %s

// Every pattern attribute and every op prints and parses back to itself.

// CHECK-LABEL: attn.model @every_pattern
// CHECK: attn.layer 0 heads = 16 kv_heads = 4 head_dim = 128 dtype = bf16 {
// CHECK-NEXT: attn.heads [0] = #attn.dense
// CHECK-NEXT: attn.heads [1] = #attn.causal
// CHECK-NEXT: attn.heads [2] = #attn.window<before = 128>
// CHECK-NEXT: attn.heads [3] = #attn.window<before = 64, after = 64>
// CHECK-NEXT: attn.heads [4] = #attn.sink<4>
// CHECK-NEXT: attn.heads [5] = #attn.a_shape<sink = 4, before = 1024>
// CHECK-NEXT: attn.heads [6] = #attn.multi_diagonal<stride = 1560, width = 8>
// CHECK-NEXT: attn.heads [7] = #attn.multi_diagonal<offsets = [-3120, 0, 3120], width = 4>
// CHECK-NEXT: attn.heads [8] = #attn.vertical_stripe<ranges = [0, 226, 1000, 1016]>
// CHECK-NEXT: attn.heads [9] = #attn.vertical_stripe<period = 1560, width = 16, phase = 3>
// CHECK-NEXT: attn.heads [10] = #attn.horizontal_stripe<ranges = [0, 16]>
// CHECK-NEXT: attn.heads [11] = #attn.grid<stride = 1560, vertical_width = 8, slash_width = 8>
// CHECK-NEXT: attn.heads [12] = #attn.strided_shards<shards = 4, block = 64, offset = 1>
// CHECK-NEXT: attn.heads [13] = #attn.shifted_groups<size = 2048, shift = 1024>
// CHECK-NEXT: attn.heads [14] = #attn.block_sparse<block_q = 64, block_k = 64, blocks = [0, 0, 1, 0, 1, 1]>
// CHECK-NEXT: attn.heads [15] = #attn.skip
// CHECK-NEXT: }
attn.model @every_pattern {
  attn.layer 0 heads = 16 kv_heads = 4 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.dense
    attn.heads [1] = #attn.causal
    attn.heads [2] = #attn.window<before = 128>
    attn.heads [3] = #attn.window<after = 64, before = 64>
    attn.heads [4] = #attn.sink<4>
    attn.heads [5] = #attn.a_shape<sink = 4, before = 1024, after = 0>
    attn.heads [6] = #attn.multi_diagonal<stride = 1560, width = 8>
    attn.heads [7] = #attn.multi_diagonal<offsets = [-3120, 0, 3120], width = 4>
    attn.heads [8] = #attn.vertical_stripe<ranges = [0, 226, 1000, 1016]>
    attn.heads [9] = #attn.vertical_stripe<period = 1560, width = 16, phase = 3>
    attn.heads [10] = #attn.horizontal_stripe<ranges = [0, 16]>
    attn.heads [11] = #attn.grid<stride = 1560, vertical_width = 8, slash_width = 8>
    attn.heads [12] = #attn.strided_shards<shards = 4, block = 64, offset = 1>
    attn.heads [13] = #attn.shifted_groups<size = 2048, shift = 1024>
    attn.heads [14] = #attn.block_sparse<block_q = 64, block_k = 64, blocks = [0, 0, 1, 0, 1, 1]>
    attn.heads [15] = #attn.skip
  }
}

// CHECK-LABEL: attn.model @combinators
// CHECK: attn.layer 0 heads = 3 kv_heads = 1 head_dim = 64 dtype = f16 {
// CHECK-NEXT: attn.heads [0] = #attn.union<#attn.sink<4>, #attn.window<before = 512>>
// CHECK-NEXT: attn.heads [2, 1] = #attn.intersect<#attn.union<#attn.strided_shards<shards = 2>, #attn.window<before = 8>>, #attn.causal>
// CHECK-NEXT: }
// CHECK: attn.layer 1 heads = 1 kv_heads = 1 head_dim = 256 dtype = f32 {
// CHECK-NEXT: attn.heads [0] = #attn.difference<#attn.causal, #attn.window<before = 128>>
attn.model @combinators {
  attn.layer 0 heads = 3 kv_heads = 1 head_dim = 64 dtype = f16 {
    attn.heads [0] = #attn.union<#attn.sink<4>, #attn.window<before = 512>>
    attn.heads [2, 1] = #attn.intersect<#attn.union<#attn.strided_shards<shards = 2>, #attn.window<before = 8>>, #attn.causal>
  }
  attn.layer 1 heads = 1 kv_heads = 1 head_dim = 256 dtype = f32 {
    attn.heads [0] = #attn.difference<#attn.causal, #attn.window<before = 128>>
  }
}

// Attributes may be named with aliases, like any MLIR attribute.
// CHECK-LABEL: attn.model @aliases
// CHECK: attn.heads [0, 1] = #attn.a_shape<sink = 4, before = 256>
#local = #attn.a_shape<sink = 4, before = 256>
attn.model @aliases {
  attn.layer 7 heads = 2 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #local
  }
}
