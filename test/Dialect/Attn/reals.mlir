// RUN: attn-opt %s | FileCheck %s
// RUN: attn-opt %s | attn-opt | FileCheck %s
// RUN: attn-opt %s --verify-roundtrip | FileCheck %s
//
// Real parameters print in the shortest form that reads back as the same
// double, with a decimal point before any exponent (MLIR's lexer reads
// `1e-05` as the integer 1 and an identifier): small and tiny values,
// values without a short decimal form and 1/3 survive print and parse
// exactly (the second RUN line reparses the printed text).

// CHECK-LABEL: attn.model @reals
attn.model @reals {
  attn.layer 0 heads = 6 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // CHECK: attn.heads [0] = #attn.block_topk<block = 64, gamma = 1.0e-05>
    attn.heads [0] = #attn.block_topk<block = 64, gamma = 0.00001>
    // CHECK: attn.heads [1] = #attn.block_topk<block = 64, gamma = 1.0e-300, tau = 1.5e-05>
    attn.heads [1] = #attn.block_topk<block = 64, gamma = 1.0e-300, tau = 0.000015>
    // CHECK: attn.heads [2] = #attn.block_topk<block = 64, gamma = 0.1>
    attn.heads [2] = #attn.block_topk<block = 64, gamma = 0.1>
    // 1/3 to more digits than a double holds: its nearest double, printed
    // in the 16 digits that identify it.
    // CHECK: attn.heads [3] = #attn.block_topk<block = 64, gamma = 0.3333333333333333>
    attn.heads [3] = #attn.block_topk<block = 64, gamma = 0.33333333333333333333>
    // The double below 1, and the smallest normal double.
    // CHECK: attn.heads [4] = #attn.block_topk<block = 64, gamma = 0.9999999999999999>
    attn.heads [4] = #attn.block_topk<block = 64, gamma = 0.9999999999999999>
    // CHECK: attn.heads [5] = #attn.block_topk<block = 64, gamma = 2.2250738585072014e-308>
    attn.heads [5] = #attn.block_topk<block = 64, gamma = 2.2250738585072014e-308>
  }
}
