// RUN: attn-opt %s --attn-report="q-len=8" -o /dev/null | FileCheck %s
// RUN: attn-opt %s --attn-report="q-len=4 k-len=8" -o /dev/null | FileCheck %s --check-prefix=SHORT
// RUN: not attn-opt %s --attn-report="q-len=0" -o /dev/null 2>&1 | FileCheck %s --check-prefix=BAD
// RUN: not attn-opt %s --attn-report="q-len=1000000 k-len=1000000" -o /dev/null 2>&1 | FileCheck %s --check-prefix=BIG

// Densities derived by hand at Nq = Nk = 8 (64 pairs):
//   causal: 1 + 2 + ... + 8 = 36 pairs -> 56.25%
//   window<before = 1>: 8 + 7 = 15 pairs -> 23.44%
//   strided_shards<shards = 3>: head 0 sees keys {0, 3, 6}, head 1 {1, 4, 7},
//     head 2 {2, 5}: 24, 24 and 16 pairs -> 25.00-37.50%
//   skip: 0 pairs.
// Mean over the 6 heads: (56.25 + 23.44 + 37.5 + 37.5 + 25 + 0) / 6 = 29.95%.

// CHECK: model @report: density = allowed (query, key) pairs / (Nq * Nk) at Nq = 8, Nk = 8
// CHECK-NEXT: layer        density  heads  pattern [heads]
// CHECK-NEXT:     0         56.25%      1  #attn.causal [0]
// CHECK-NEXT:     0         23.44%      1  #attn.window<before = 1> [1]
// CHECK-NEXT:     0  25.00-37.50%      3  #attn.strided_shards<shards = 3> [2-4]
// CHECK-NEXT:     0          0.00%      1  #attn.skip [5]
// CHECK-NEXT: mean density over 6 heads: 29.95%

// At Nq = 4, Nk = 8 (32 pairs) queries sit at positions 4..7:
//   causal: 5 + 6 + 7 + 8 = 26 pairs -> 81.25%; window: 4 * 2 = 8 -> 25.00%.
// SHORT: at Nq = 4, Nk = 8
// SHORT: 0         81.25%      1  #attn.causal [0]
// SHORT-NEXT: 0         25.00%      1  #attn.window<before = 1> [1]

// BAD: error: attn-report: q-len and k-len must be positive with q-len * k-len <= 268435456, got q-len = 0, k-len = 0
// BIG: error: attn-report: q-len and k-len must be positive with q-len * k-len <= 268435456, got q-len = 1000000, k-len = 1000000

attn.model @report {
  attn.layer 0 heads = 6 kv_heads = 1 head_dim = 64 dtype = f16 {
    attn.heads [0] = #attn.causal
    attn.heads [1] = #attn.window<before = 1>
    attn.heads [4, 2, 3] = #attn.strided_shards<shards = 3>
    attn.heads [5] = #attn.skip
  }
}
