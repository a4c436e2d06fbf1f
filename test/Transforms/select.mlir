// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json" 2>&1 | FileCheck %s
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json min-gain=0.1" 2>&1 | FileCheck %s --check-prefix=GAIN
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json skip-below=0.02" 2>&1 | FileCheck %s --check-prefix=SKIP
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json min-recall=0.5 max-layer-error=1" 2>&1 | FileCheck %s --check-prefix=LOW
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib.json min-recall=0.5" 2>&1 | FileCheck %s --check-prefix=LOWBUDGET
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

// Head 3 contributes 0.01 < 0.02: skipped, but that alone loses
// sqrt(0.01) = 0.1 of the layer; with heads 0 and 1 (shares 0.4 * 0.01^2,
// 0.3 * 0.04^2) the predicted error is sqrt(0.010536) = 0.1026, above
// max-layer-error 0.1 (select-budget.mlir). Head 1's reference costs what
// its window<before = 128> does (12 ms) with error 0: it moves there first,
// free; head 3 then leaves the skip for its window<before = 64> (share
// 0.01 * 0.04^2): sqrt(0.00004 + 0.000016) = 0.0075.
// SKIP: predicted 45.000 ms, reference 48.000 ms (1.07x); 2 head groups, 2 heads at the reference; predicted output error 0.0075 (max-layer-error 0.1), 2 heads changed to meet it
// SKIP: attn.heads [0, 3] = #attn.window<before = 64>
// SKIP-NEXT: attn.heads [1, 2] = #attn.causal

// At min-recall 0.5 (and no layer budget) the 64-key window serves every
// head: 42 ms, but the layer's predicted error is sqrt(0.4 * 0.01^2 + 0.3 *
// 0.2^2 + 0.29 * 0.5^2 + 0.01 * 0.04^2) = sqrt(0.084556) = 0.2908.
// LOW: predicted 42.000 ms, reference 48.000 ms (1.14x); 1 head groups; predicted output error 0.2908 (max-layer-error 1)
// LOW: attn.heads [0 to 3] = #attn.window<before = 64>

// Within the default budget 0.1 (shares up to 0.01): head 2 (share 0.0725)
// moves to causal first (1.5 ms more for 0.0725: window<before = 128>, as
// dear, errs), leaving 0.012056 (0.1098); then head 1 (share 0.012):
// sqrt(0.00004 + 0.000016) = 0.0075.
// LOWBUDGET: predicted 45.000 ms, reference 48.000 ms (1.07x); 2 head groups, 2 heads at the reference; predicted output error 0.0075 (max-layer-error 0.1), 2 heads changed to meet it
// LOWBUDGET: attn.heads [0, 3] = #attn.window<before = 64>
// LOWBUDGET-NEXT: attn.heads [1, 2] = #attn.causal

// At max-error 0.02: head 0 -> window 64; heads 1 and 2 -> none (the
// reference); head 3 -> window 128 (a_shape also fits, dearer): 46.5 ms.
// ERR: warning: attn-select: no candidate reaches recall 0.95 for heads [1, 2]
// ERR: predicted 46.500 ms, reference 48.000 ms (1.03x); 3 head groups, 2 heads at the reference
// ERR: attn.heads [0] = #attn.window<before = 64>
// ERR-NEXT: attn.heads [1, 2] = #attn.causal
// ERR-NEXT: attn.heads [3] = #attn.window<before = 128>

// STRICT: error: attn-select: no candidate reaches recall 0.95 (with error <= 1) for heads [2] of layer 0
