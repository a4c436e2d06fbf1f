// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json" 2>&1 | FileCheck %s
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json min-gain=0.1" 2>&1 | FileCheck %s --check-prefix=GAIN
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json skip-below=0.02" 2>&1 | FileCheck %s --check-prefix=SKIP
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json min-recall=0.5" 2>&1 | FileCheck %s --check-prefix=LOW
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json max-error=0.02" 2>&1 | FileCheck %s --check-prefix=ERR
// RUN: not attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json fallback=error" 2>&1 | FileCheck %s --check-prefix=STRICT
//
// The selection on a hand-made target (one slot: a layer's time is its work;
// 1 ms a full 64 x 64 tile, 1.5 ms a partial one) at 256 tokens (4 x 4
// tiles), tile counts derived by hand (and printed by --attn-report):
//   window<before = 64>:          7 partial          -> 10.5 ms a head
//   a_shape<sink = 4, before = 64>: 9 partial        -> 13.5 ms
//   window<before = 128>:  3 full + 6 partial        -> 12.0 ms
//   causal (the reference): 6 full + 4 partial       -> 12.0 ms
// At min-recall 0.95 (Inputs/select-calib.json): head 0 -> window 64 (all
// three feasible); head 1 -> window 128 (a_shape also feasible, dearer);
// head 2 -> none feasible: the reference, with a warning; head 3 -> window
// 64. 10.5 + 12 + 12 + 10.5 = 45 ms against 4 x 12 = 48 ms: sparse pays.

attn.model @m {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0 to 3] = #attn.causal
  }
}

// CHECK: warning: attn-select: no candidate reaches recall 0.95 for heads [2]; they keep the reference #attn.causal
// CHECK: remark: attn-select: layer 0: sparse at 256 tokens: predicted 45.000 ms, reference 48.000 ms (1.07x); 3 head groups, 1 heads at the reference
// CHECK: module {
// CHECK-NEXT: attn.model @m {
// CHECK-NEXT: attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
// CHECK-NEXT: attn.heads [0, 3] = #attn.window<before = 64>
// CHECK-NEXT: attn.heads [1] = #attn.window<before = 128>
// CHECK-NEXT: attn.heads [2] = #attn.causal
// CHECK-NEXT: }

// With min-gain 0.1 sparse must be predicted below 43.2 ms: it is not.
// GAIN: remark: attn-select: layer 0: sparse does not pay, the reference is kept at 256 tokens: predicted 48.000 ms, reference 48.000 ms (1.00x); 1 head groups
// GAIN: attn.heads [0 to 3] = #attn.causal

// Head 3 contributes 0.01 < 0.02: skipped; 10.5 + 12 + 12 = 34.5 ms against
// 36 ms (the reference keeps the skip).
// SKIP: predicted 34.500 ms, reference 36.000 ms (1.04x); 4 head groups, 1 heads skipped, 1 heads at the reference
// SKIP: attn.heads [0] = #attn.window<before = 64>
// SKIP-NEXT: attn.heads [1] = #attn.window<before = 128>
// SKIP-NEXT: attn.heads [2] = #attn.causal
// SKIP-NEXT: attn.heads [3] = #attn.skip

// At min-recall 0.5 the 64-key window serves every head: 42 ms.
// LOW: predicted 42.000 ms, reference 48.000 ms (1.14x); 1 head groups
// LOW: attn.heads [0 to 3] = #attn.window<before = 64>

// At max-error 0.02: head 0 -> window 64; heads 1 and 2 -> none (the
// reference); head 3 -> window 128 (a_shape also fits, dearer): 46.5 ms.
// ERR: warning: attn-select: no candidate reaches recall 0.95 for heads [1, 2]
// ERR: predicted 46.500 ms, reference 48.000 ms (1.03x); 3 head groups, 2 heads at the reference
// ERR: attn.heads [0] = #attn.window<before = 64>
// ERR-NEXT: attn.heads [1, 2] = #attn.causal
// ERR-NEXT: attn.heads [3] = #attn.window<before = 128>

// STRICT: error: attn-select: no candidate reaches recall 0.95 (with error <= 1) for heads [2] of layer 0
