// RUN: attn-opt %s --attn-schedule --attn-lower-runs | FileCheck %s
// RUN: attn-opt %s --attn-schedule --attn-lower-runs | attn-opt | FileCheck %s
// RUN: attn-opt %s --attn-schedule="block-q=128 block-k=64" --attn-lower-runs | FileCheck %s --check-prefix=WIDE
// RUN: attn-opt %s --attn-schedule="block-q=64 block-k=128" --attn-lower-runs | FileCheck %s --check-prefix=TALL
// RUN: attn-opt %s --attn-schedule --attn-lower-runs | attn-translate - --emit=cuda | FileCheck %s --check-prefix=EMIT

// The transposed schedule of every group: for the key block whose keys are
// k0..k1 (key block j when Nq = Nk), the runs of query blocks that see it,
// FULL inside `full`, PARTIAL elsewhere; what the backward's key-major pass
// walks (docs/backward.md). It follows each group's forward runs inside
// `attn.run_transposed`. Positions p = q + Nk - Nq are rows when Nq = Nk.

// The emitter reads the forward runs and ignores their transpose.
// EMIT: struct P0 {

attn.model @transposed {
  attn.layer 0 heads = 17 kv_heads = 17 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.window<before = 256>
    attn.heads [1] = #attn.causal
    attn.heads [2] = #attn.window<before = 64, after = 64>
    attn.heads [3] = #attn.a_shape<sink = 64, before = 1024>
    attn.heads [4] = #attn.multi_diagonal<stride = 1024, width = 32>
    attn.heads [5] = #attn.multi_diagonal<offsets = [-4096, -2048, 0, 2048, 4096, 8192], width = 16>
    attn.heads [6] = #attn.grid<stride = 512, vertical_width = 16, slash_width = 8>
    attn.heads [7] = #attn.vertical_stripe<ranges = [0, 8, 16, 20, 64, 70, 100, 104, 200, 204]>
    attn.heads [8] = #attn.vertical_stripe<ranges = [0, 8, 64, 70]>
    attn.heads [9] = #attn.horizontal_stripe<period = 8, width = 2>
    attn.heads [10] = #attn.horizontal_stripe<ranges = [0, 64, 1000, 1100]>
    attn.heads [11] = #attn.intersect<#attn.causal, #attn.strided_shards<shards = 4, block = 64>>
    attn.heads [12] = #attn.shifted_groups<size = 4096, shift = 2048>
    attn.heads [13] = #attn.block_sparse<block_q = 64, block_k = 64, blocks = [0, 0, 1, 0, 1, 1, 3, 2]>
    attn.heads [14] = #attn.difference<#attn.causal, #attn.window<before = 127>>
    attn.heads [15] = #attn.intersect<#attn.window<before = 512, after = 512>, #attn.causal, #attn.horizontal_stripe<period = 8, width = 2>>
    attn.heads [16] = #attn.union<#attn.dense, #attn.causal>
  }
}

// A 256-key causal window, d = k - p in [-256, 0]: key k is seen by the
// positions [k, k + 256], so the block by [k0, k1 + 256] and all of its keys
// by [k1, k0 + 256]. At 64 x 64 key block j meets query blocks j..j + 4,
// fully j + 1..j + 3 (the forward's runs mirrored).
// CHECK-LABEL: attn.group 0 heads [0] = #attn.window<before = 256> runs {
// CHECK-NEXT: attn.run_interval keys [p0 - 256, p1]
// CHECK-NEXT: attn.run_transposed {
// CHECK-NEXT: attn.run_positions [k0, k1 + 256] full [k1, k0 + 256] blocks [j, j + 4] full [j + 1, j + 3]
// CHECK-NEXT: }
// CHECK-NEXT: }
// At 128 x 64 a key block is half a query block: no affine block form, the
// positions alone (query block floor((p - Nk + Nq) / 128)).
// WIDE-LABEL: attn.group 0 heads [0] = #attn.window<before = 256> runs {
// WIDE: attn.run_transposed {
// WIDE-NEXT: attn.run_positions [k0, k1 + 256] full [k1, k0 + 256]{{$}}
// At 64 x 128 key block j holds query blocks 2j and 2j + 1: it meets query
// blocks 2j..2j + 5 (positions up to 128j + 127 + 256), fully 2j + 2..2j + 3
// (positions from 128j + 127 up to 128j + 256).
// TALL-LABEL: attn.group 0 heads [0] = #attn.window<before = 256> runs {
// TALL: attn.run_transposed {
// TALL-NEXT: attn.run_positions [k0, k1 + 256] full [k1, k0 + 256] blocks [2 * j, 2 * j + 5] full [2 * j + 2, 2 * j + 3]

// Causal, d <= 0: every position from k0 on, fully from k1 on: the diagonal
// block partial, every later one full.
// CHECK-LABEL: attn.group 1 heads [1] = #attn.causal runs {
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_positions [k0, end] full [k1, end] blocks [j, end] full [j + 1, end]
// WIDE-LABEL: attn.group 1 heads [1] = #attn.causal runs {
// WIDE: attn.run_positions [k0, end] full [k1, end]{{$}}

// A window on both sides, d in [-64, 64]: positions [k0 - 64, k1 + 64].
// CHECK-LABEL: attn.group 2 heads [2]
// CHECK: attn.run_positions [k0 - 64, k1 + 64] full [k1 - 64, k0 + 64] blocks [j - 1, j + 1] full [j, j]

// A-shape: the sink's key bound (keys [0, 64)) is one class for the whole
// key block, every query block, intersected with causal positions; the
// window's band as above. Key block 0 is seen by every query block from
// the diagonal on, any other by 17 query blocks.
// CHECK-LABEL: attn.group 3 heads [3]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_union {
// CHECK-NEXT: attn.run_intersect {
// CHECK-NEXT: attn.run_listed "key" ranges = [0, 64]
// CHECK-NEXT: attn.run_positions [k0, end] full [k1, end] blocks [j, end] full [j + 1, end]
// CHECK-NEXT: }
// CHECK-NEXT: attn.run_positions [k0, k1 + 1024] full [k1, k0 + 1024] blocks [j, j + 16] full [j + 1, j + 15]

// Offset families keep their sets: the walk takes their bands in reverse
// order (offset d is seen by positions k - d, lower for larger d).
// CHECK-LABEL: attn.group 4 heads [4]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_periodic "diagonal" period = 1024 width = 65 phase = -32
// CHECK-LABEL: attn.group 5 heads [5]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_listed "diagonal" ranges = [-4112, -4079, -2064, -2031, -16, 17, 2032, 2065, 4080, 4113, 8176, 8209]

// Grid: the vertical lines are a key set (one class per key block), the
// slash lines an offset family.
// CHECK-LABEL: attn.group 6 heads [6]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_union {
// CHECK-NEXT: attn.run_periodic "key" period = 512 width = 16 phase = 0
// CHECK-NEXT: attn.run_periodic "diagonal" period = 512 width = 8 phase = -7

// Key lists: a key block meeting them is seen by every query block, FULL
// when it lies inside one range. A short list's forward intervals (constant
// bounds only) become key ranges.
// CHECK-LABEL: attn.group 7 heads [7]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_listed "key" ranges = [0, 8, 16, 20, 64, 70, 100, 104, 200, 204]
// CHECK-LABEL: attn.group 8 heads [8]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_union {
// CHECK-NEXT: attn.run_listed "key" ranges = [0, 8]
// CHECK-NEXT: attn.run_listed "key" ranges = [64, 70]

// Row sets: in the forward one class per query block, here runs of
// positions.
// CHECK-LABEL: attn.group 9 heads [9]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_periodic "row" period = 8 width = 2 phase = 0
// CHECK-LABEL: attn.group 10 heads [10]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_listed "row" ranges = [0, 64, 1000, 1100]

// S2: causal positions intersected with the head's shard of keys (a key
// block in the shard, or not).
// CHECK-LABEL: attn.group 11 heads [11]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_intersect {
// CHECK-NEXT: attn.run_positions [k0, end] full [k1, end] blocks [j, end] full [j + 1, end]
// CHECK-NEXT: attn.run_shards block = 64 shards = 4 offset = 0

// Shifted groups are symmetric in (p, k).
// CHECK-LABEL: attn.group 12 heads [12]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_groups size = 4096 shift = 2048

// A block list transposes to its column-major list: (key block, query
// block) pairs, sorted by key block.
// CHECK-LABEL: attn.group 13 heads [13]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_blocks block_q = 64 block_k = 64 blocks = [0, 0, 0, 1, 1, 1, 2, 3]

// Difference: causal positions less the 128-key window's, walked with the
// forward's algebra (a FULL run of the second part removes its blocks).
// CHECK-LABEL: attn.group 14 heads [14]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_difference {
// CHECK-NEXT: attn.run_positions [k0, end] full [k1, end] blocks [j, end] full [j + 1, end]
// CHECK-NEXT: attn.run_positions [k0, k1 + 127] full [k1, k0 + 127] blocks [j, j + 2] full [j + 1, j + 1]

// Intersection: the merged interval's positions and the row set.
// CHECK-LABEL: attn.group 15 heads [15]
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_intersect {
// CHECK-NEXT: attn.run_positions [k0, k1 + 512] full [k1, k0 + 512] blocks [j, j + 8] full [j + 1, j + 7]
// CHECK-NEXT: attn.run_periodic "row" period = 8 width = 2 phase = 0

// Union with dense: every query block, FULL.
// CHECK-LABEL: attn.group 16 heads [16]
// CHECK-NEXT: attn.run_all
// CHECK-NEXT: attn.run_transposed {
// CHECK-NEXT: attn.run_all
// CHECK-NEXT: }
