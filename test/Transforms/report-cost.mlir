// RUN: attn-opt %s --attn-report="q-len=256 target=%S/Inputs/select-target.json" -o /dev/null | FileCheck %s
// RUN: attn-opt %s --attn-report="q-len=256 target=%S/Inputs/select-target.json batch=2" -o /dev/null | FileCheck %s --check-prefix=BATCH
// RUN: attn-opt %s --attn-report="q-len=1048576 target=h100" -o /dev/null | FileCheck %s --check-prefix=LONG
// RUN: not attn-opt %s --attn-report="q-len=256 target=h100 batch=0" -o /dev/null 2>&1 | FileCheck %s --check-prefix=BADBATCH
//
// The prediction per head group and layer on the hand-made one-slot target
// (1 ms a full 64 x 64 tile, 1.5 ms a partial one; a layer's time is its
// work). At 256 tokens (4 x 4 tiles): causal has 6 full and 4 partial tiles
// a head (12 ms), the 64-key window 7 partial (10.5 ms), skip nothing; dense
// 16 full tiles a head.

attn.model @cost {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.causal
    attn.heads [2] = #attn.window<before = 64>
    attn.heads [3] = #attn.skip
  }
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 128 dtype = bf16 {
    attn.heads [0, 1] = #attn.causal
  }
}

// Densities are still printed where they can be counted.
// CHECK: density = allowed (query, key) pairs
// CHECK: model @cost: predicted time on target one-slot (hand-made for the tests: 1 ms a full tile, 1.5 ms a partial one) at Nq = 256, Nk = 256, batch 1
// CHECK-NEXT: layer        full     partial     work (ms)  heads  pattern [heads]
// CHECK-NEXT:     0          12           8        24.000      2  #attn.causal [0-1]
// CHECK-NEXT:     0           0           7        10.500      1  #attn.window<before = 64> [2]
// CHECK-NEXT:     0           0           0         0.000      1  #attn.skip [3]
// CHECK-NEXT: layer 0: predicted 34.500 ms, dense 64.000 ms (1.86x)
// head_dim 128 is twice the target's 64: every tile costs double.
// CHECK-NEXT:     1          12           8        48.000      2  #attn.causal [0-1]
// CHECK-NEXT: layer 1: predicted 48.000 ms, dense 64.000 ms (1.33x)
// CHECK-NEXT: model: predicted 82.500 ms, dense 128.000 ms (1.55x)

// BATCH: layer 0: predicted 69.000 ms, dense 128.000 ms (1.86x)

// At 1M tokens densities are not counted (2^40 pairs) but the prediction
// is made.
// LONG-NOT: density
// LONG: model @cost: predicted time on target h100 (published specifications
// LONG-SAME: not measured on a GPU) at Nq = 1048576, Nk = 1048576, batch 1
// LONG: layer 0: predicted
// BADBATCH: error: attn-report: batch must be in [1, 1048576], got 0
