// RUN: attn-opt %s --attn-schedule --attn-lower-runs | FileCheck %s
// RUN: attn-opt %s --attn-schedule --attn-lower-runs | attn-opt | FileCheck %s
// RUN: attn-opt %s --attn-schedule="block-q=128 block-k=64" --attn-lower-runs | FileCheck %s --check-prefix=WIDE
// RUN: attn-opt %s --attn-schedule="block-q=64 block-k=48" --attn-lower-runs | FileCheck %s --check-prefix=ODD
// RUN: attn-opt %s --attn-schedule --attn-lower-runs | attn-translate - --emit=cuda | FileCheck %s --check-prefix=EMIT

// The emitter accepts runs that agree with their patterns.
// EMIT: struct P0 {
// EMIT: tessera_attn_bf16_d64(

// What the compiler derived for each head group: for the query block whose
// rows sit at aligned positions p0..p1 (query block i when Nq = Nk), the
// runs of key blocks it visits, FULL inside `full`, PARTIAL elsewhere.

attn.model @catalogue {
  attn.layer 0 heads = 12 kv_heads = 12 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.window<before = 256>
    attn.heads [1] = #attn.causal
    attn.heads [2] = #attn.a_shape<sink = 64, before = 1024>
    attn.heads [3] = #attn.multi_diagonal<stride = 1024, width = 32>
    attn.heads [4] = #attn.grid<stride = 512, vertical_width = 16, slash_width = 8>
    attn.heads [5] = #attn.vertical_stripe<ranges = [0, 8, 16, 20, 64, 70, 100, 104, 200, 204]>
    attn.heads [6] = #attn.intersect<#attn.causal, #attn.strided_shards<shards = 4, block = 64>>
    attn.heads [7] = #attn.shifted_groups<size = 4096, shift = 2048>
    attn.heads [8] = #attn.block_sparse<block_q = 64, block_k = 64, blocks = [0, 0, 1, 0, 1, 1]>
    attn.heads [9] = #attn.difference<#attn.causal, #attn.window<before = 127>>
    attn.heads [10] = #attn.intersect<#attn.window<before = 512, after = 512>, #attn.causal, #attn.horizontal_stripe<period = 8, width = 2>>
    attn.heads [11] = #attn.dense
  }
}

// A 256-key causal window at 64 x 64 tiles: query block i visits key blocks
// [i - 4, i], the first and the last partial.
// CHECK-LABEL: attn.group 0 heads [0] = #attn.window<before = 256> runs {
// CHECK-NEXT: attn.run_interval keys [p0 - 256, p1] full [p1 - 256, p0] blocks [i - 4, i] full [i - 3, i - 1]
// Then its transpose (test/Transforms/lower-runs-transposed.mlir).
// CHECK-NEXT: attn.run_transposed {
// WIDE-LABEL: attn.group 0 heads [0] = #attn.window<before = 256> runs {
// WIDE-NEXT: attn.run_interval keys [p0 - 256, p1] full [p1 - 256, p0] blocks [2 * i - 4, 2 * i + 1] full [2 * i - 2, 2 * i - 1]
// No block form where block_q is not a multiple of block_k.
// ODD-LABEL: attn.group 0 heads [0] = #attn.window<before = 256> runs {
// ODD-NEXT: attn.run_interval keys [p0 - 256, p1] full [p1 - 256, p0]{{$}}

// Causal: the diagonal block partial, every block before it full.
// CHECK-LABEL: attn.group 1 heads [1] = #attn.causal runs {
// CHECK-NEXT: attn.run_interval keys [0, p1] full [0, p0] blocks [0, i] full [0, i - 1]

// A-shape: the sink's key block (keys [0, min(63, p1)]) and the window's 17
// blocks; a walk costs the same at any length.
// CHECK-LABEL: attn.group 2 heads [2] = #attn.a_shape<sink = 64, before = 1024> runs {
// CHECK-NEXT: attn.run_union {
// CHECK-NEXT: attn.run_interval keys [0, min(63, p1)] full [0, min(63, p0)] blocks [0, min(0, i)] full [0, min(0, i - 1)]
// CHECK-NEXT: attn.run_interval keys [p0 - 1024, p1] full [p1 - 1024, p0] blocks [i - 16, i] full [i - 15, i - 1]
// CHECK-NEXT: }

// Periodic families: the diagonals d = 0 mod 1024 of width 2 * 32 + 1.
// CHECK-LABEL: attn.group 3 heads [3]
// CHECK-NEXT: attn.run_periodic "diagonal" period = 1024 width = 65 phase = -32
// Grid: vertical lines (keys) and slash lines (offsets -d in [0, 8) mod 512,
// that is d in [-7, 0] mod 512).
// CHECK-LABEL: attn.group 4 heads [4]
// CHECK-NEXT: attn.run_union {
// CHECK-NEXT: attn.run_periodic "key" period = 512 width = 16 phase = 0
// CHECK-NEXT: attn.run_periodic "diagonal" period = 512 width = 8 phase = -7

// A long key list stays a listed leaf (binary search).
// CHECK-LABEL: attn.group 5 heads [5]
// CHECK-NEXT: attn.run_listed "key" ranges = [0, 8, 16, 20, 64, 70, 100, 104, 200, 204]

// S2: the causal interval intersected with the head's shard.
// CHECK-LABEL: attn.group 6 heads [6]
// CHECK-NEXT: attn.run_intersect {
// CHECK-NEXT: attn.run_interval keys [0, p1] full [0, p0]
// CHECK-NEXT: attn.run_shards block = 64 shards = 4 offset = 0

// CHECK-LABEL: attn.group 7 heads [7]
// CHECK-NEXT: attn.run_groups size = 4096 shift = 2048

// CHECK-LABEL: attn.group 8 heads [8]
// CHECK-NEXT: attn.run_blocks block_q = 64 block_k = 64 blocks = [0, 0, 1, 0, 1, 1]

// Causal less the last 128 keys: the keys before the window.
// CHECK-LABEL: attn.group 9 heads [9]
// CHECK-NEXT: attn.run_difference {
// CHECK-NEXT: attn.run_interval keys [0, p1] full [0, p0]
// CHECK-NEXT: attn.run_interval keys [p0 - 127, p1] full [p1 - 127, p0]

// The window and causal intervals of an intersection merge into one; the
// row set stays a part of its own.
// CHECK-LABEL: attn.group 10 heads [10]
// CHECK-NEXT: attn.run_intersect {
// CHECK-NEXT: attn.run_interval keys [p0 - 512, p1] full [p1 - 512, p0] blocks [i - 8, i] full [i - 7, i - 1]
// CHECK-NEXT: attn.run_periodic "row" period = 8 width = 2 phase = 0

// CHECK-LABEL: attn.group 11 heads [11] = #attn.dense runs {
// CHECK-NEXT: attn.run_all
