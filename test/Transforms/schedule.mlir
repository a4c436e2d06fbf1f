// RUN: attn-opt %s --attn-schedule | FileCheck %s
// RUN: attn-opt %s --attn-schedule="block-q=128 block-k=32" | FileCheck %s --check-prefix=TILES
// RUN: attn-opt %s --attn-schedule | attn-opt | FileCheck %s

// CHECK-LABEL: attn.model @dit
// CHECK-NEXT: attn.schedule 0 heads = 6 kv_heads = 3 head_dim = 128 dtype = bf16 block = [64, 64] skipped = [2, 5] {
// CHECK-NEXT: attn.group 0 heads [0, 3] = #attn.multi_diagonal<stride = 1024, width = 8>
// CHECK-NEXT: attn.group 1 heads [1] = #attn.grid<stride = 1024, vertical_width = 16>
// CHECK-NEXT: attn.group 2 heads [4] = #attn.dense
// CHECK-NEXT: }
// CHECK-NEXT: attn.schedule 1 heads = 2 kv_heads = 2 head_dim = 64 dtype = f16 block = [64, 64] skipped = [] {
// CHECK-NEXT: attn.group 0 heads [0] = #attn.strided_shards<shards = 2>
// CHECK-NEXT: attn.group 1 heads [1] = #attn.strided_shards<shards = 2>
// TILES: attn.schedule 0 {{.*}} block = [128, 32] skipped = [2, 5]
attn.model @dit {
  attn.layer 0 heads = 6 kv_heads = 3 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.multi_diagonal<stride = 1024, width = 8>
    attn.heads [1] = #attn.grid<stride = 1024, vertical_width = 16>
    attn.heads [2, 5] = #attn.skip
    attn.heads [3] = #attn.multi_diagonal<stride = 1024, width = 8>
    attn.heads [4] = #attn.dense
  }
  attn.layer 1 heads = 2 kv_heads = 2 head_dim = 64 dtype = f16 {
    attn.heads [0, 1] = #attn.strided_shards<shards = 2>
  }
}
