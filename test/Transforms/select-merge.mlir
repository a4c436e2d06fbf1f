// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target-groups.json calibration=%S/Inputs/select-calib-merge.json" 2>&1 | FileCheck %s --check-prefix=MERGE
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib-merge.json" 2>&1 | FileCheck %s --check-prefix=SPLIT
//
// Fewer head groups where that is cheaper. Head 0's cheapest candidate is
// the 64-key window (10.5 ms), head 1's the a_shape (13.5 ms; the window
// misses its floor). With 4 ms per head group (select-target-groups.json)
// two groups cost 24 + 8 = 32 ms, one a_shape group 27 + 4 = 31 ms: merged.
// The reference (dense, 16 full tiles = 16 ms a head) costs 32 + 4 = 36 ms.
// Without a group cost the two groups stay (24 ms).

attn.model @m {
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.dense
  }
}

// MERGE: remark: attn-select: layer 1: sparse at 256 tokens: predicted 31.000 ms, reference 36.000 ms (1.16x); 1 head groups
// MERGE: attn.heads [0, 1] = #attn.a_shape<sink = 4, before = 64>

// SPLIT: predicted 24.000 ms, reference 32.000 ms (1.33x); 2 head groups
// SPLIT: attn.heads [0] = #attn.window<before = 64>
// SPLIT-NEXT: attn.heads [1] = #attn.a_shape<sink = 4, before = 64>
