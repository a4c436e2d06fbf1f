// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib-budget.json skip-below=0.05" 2>&1 | FileCheck %s
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib-budget.json skip-below=0.05 max-layer-error=0.2" 2>&1 | FileCheck %s --check-prefix=LOOSE
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib-budget.json skip-below=0.05 max-layer-error=1" 2>&1 | FileCheck %s --check-prefix=NOBUDGET
// RUN: sed '/contribution/d' %S/Inputs/select-calib-budget.json > %t.json
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%t.json" 2>&1 | FileCheck %s --check-prefix=BOUND
// RUN: not attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib-budget.json max-layer-error=-1" 2>&1 | FileCheck %s --check-prefix=RANGE
// RUN: %python -c "import json; c = json.load(open('%S/Inputs/select-calib-budget.json')); [x.update(error_share=[0.0] * 4) for x in c['layers'][0]['candidates']]; json.dump(c, open('%t-share.json', 'w'))"
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%t-share.json skip-below=0.05" 2>&1 | FileCheck %s --check-prefix=SHARE
//
// The layer budget (max-layer-error, default 0.1): heads whose skips each
// pass skip-below can together lose the layer. Inputs/select-calib-budget.json:
// contributions [0.91, 0.03, 0.03, 0.03]; window<before = 64> has errors
// [0.01, 0.08, 0.2, 0.3], window<before = 128> [0.005, 0.05, 0.05, 0.05],
// every recall 0.99. The layer's predicted error is sqrt(sum_h share_h),
// share_h = contribution_h * error_h^2 for a candidate, contribution_h for
// a skip, 0 for the reference. On the hand-made target (select.mlir): 10.5
// ms a window<before = 64> head, 12 ms a window<before = 128> or causal one.
//
// skip-below 0.05 skips heads 1-3 (0.03 each): shares 0.91 * 0.01^2 +
// 3 * 0.03 = 0.090091, error 0.3002 > 0.1. Moves, by added work per share
// removed: head 1 skip -> window 64 (10.5 / (0.03 - 0.000192) = 352),
// head 2 (10.5 / 0.0288 = 365), head 3 (10.5 / 0.0273 = 385); after the
// three, 0.000091 + 0.000192 + 0.0012 + 0.0027 = 0.004183: error 0.0647.

attn.model @m {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0 to 3] = #attn.causal
  }
}

// CHECK: remark: attn-select: layer 0: sparse at 256 tokens: predicted 42.000 ms, reference 48.000 ms (1.14x); 1 head groups; predicted output error 0.0647 (max-layer-error 0.1), 3 heads changed to meet it
// CHECK: attn.heads [0 to 3] = #attn.window<before = 64>
// CHECK-NOT: attn.skip

// At 0.2 (shares up to 0.04) two moves suffice: 0.000091 + 0.000192 +
// 0.0012 + 0.03 = 0.031483, error 0.1774; head 3, whose window is the
// least accurate, stays skipped.
// LOOSE: predicted 31.500 ms, reference 36.000 ms (1.14x); 2 head groups, 1 heads skipped; predicted output error 0.1774 (max-layer-error 0.2), 2 heads changed to meet it
// LOOSE: attn.heads [0 to 2] = #attn.window<before = 64>
// LOOSE-NEXT: attn.heads [3] = #attn.skip

// Without a budget (1: every assignment fits) the three skips stay and the
// layer loses 30% of its output.
// NOBUDGET: predicted 10.500 ms, reference 12.000 ms (1.14x); 2 head groups, 3 heads skipped; predicted output error 0.3002 (max-layer-error 1)
// NOBUDGET: attn.heads [0] = #attn.window<before = 64>
// NOBUDGET-NEXT: attn.heads [1 to 3] = #attn.skip

// Without contributions the layer error is bounded by its largest head
// error (sqrt(sum_h c_h e_h^2) <= max_h e_h for shares c_h summing to 1),
// and no head can be skipped: heads 2 and 3 (0.2, 0.3) take their cheapest
// option within 0.1, causal (window<before = 128> costs as much and errs).
// BOUND: predicted 45.000 ms, reference 48.000 ms (1.07x); 2 head groups, 2 heads at the reference; predicted output error at most 0.0800 (max-layer-error 0.1; the largest head's: no contributions), 2 heads changed to meet it
// BOUND: attn.heads [0, 1] = #attn.window<before = 64>
// BOUND-NEXT: attn.heads [2, 3] = #attn.causal

// Measured shares (attn-calibrate's error_share) replace contribution x
// error^2: with every candidate's share 0 the three skips (0.03 each) must
// all go (two leave 0.03 > 0.01), and the layer error is 0.
// SHARE: predicted output error 0.0000 (max-layer-error 0.1), 3 heads changed to meet it
// SHARE: attn.heads [0 to 3] = #attn.window<before = 64>

// RANGE: error: attn-select: min-recall and skip-below must be in [0, 1], min-gain in [0, 1), max-error and max-layer-error >= 0
