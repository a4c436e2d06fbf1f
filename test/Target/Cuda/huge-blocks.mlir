// RUN: attn-translate %s --emit=manifest | FileCheck %s
// RUN: attn-translate %s --emit=cuda | FileCheck %s --check-prefix=CUDA
// RUN: attn-opt %s --attn-schedule --attn-lower-runs | FileCheck %s --check-prefix=RUNS

// A listed block at query-block index 2^40 (the documented limit): the
// schedule holds the listed row and its columns, never one entry per index
// up to the largest (that took gigabytes and aborted before).

attn.model @m {
  attn.layer 0 heads = 2 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.block_sparse<block_q = 3, block_k = 5, blocks = [1099511627776, 0]>
  }
}

// The program's data: listed row ids, row starts, columns.
// CHECK: "program": {
// CHECK-NEXT: "data": [
// CHECK-NEXT: 1099511627776,
// CHECK-NEXT: 0,
// CHECK-NEXT: 1,
// CHECK-NEXT: 0
// CHECK-NEXT: ],

// CUDA: TESSERA_CONST i64 P0_d0[] = {1099511627776LL, 0LL, 1LL, 0LL};
// CUDA: return blockListed(P0_d0, 1LL, floorDiv(p, 3LL), k / 5LL);
// CUDA: blocksRun(ctx, x, 3LL, 5LL, 1LL, P0_d1)

// RUNS: attn.run_blocks block_q = 3 block_k = 5 blocks = [1099511627776, 0]
