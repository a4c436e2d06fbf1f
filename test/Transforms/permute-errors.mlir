// RUN: not attn-opt %s --attn-schedule --attn-permute="seq-len=1" 2>&1 | FileCheck %s --check-prefix=SHORT
// RUN: not attn-opt %s --attn-schedule --attn-permute="seq-len=16385" 2>&1 | FileCheck %s --check-prefix=LONG
// RUN: not attn-opt %s --attn-schedule --attn-permute="min-gain=1" 2>&1 | FileCheck %s --check-prefix=GAIN
// RUN: not attn-opt %s --attn-schedule --attn-permute="min-gain=-0.5" 2>&1 | FileCheck %s --check-prefix=GAIN-NEG
// RUN: not attn-opt %s --attn-schedule --attn-permute="target=%t.missing.json" 2>&1 | FileCheck %s --check-prefix=TARGET
// RUN: not attn-opt %s --attn-schedule="block-q=1 block-k=1" --attn-permute="seq-len=8192" 2>&1 | FileCheck %s --check-prefix=TILES
// RUN: attn-opt %s --attn-permute 2>&1 | FileCheck %s --check-prefix=UNSCHEDULED
//
// --attn-permute's options out of range: an error naming the option, no
// output; so are tiles too many to count. A layer that is not scheduled yet
// gets a warning and no layout.

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.multi_diagonal<stride = 64, width = 1>
  }
}

// SHORT: error: attn-permute: seq-len must be at least 2 with seq-len^2 <= 268435456 (tiles are counted pair by pair), got 1
// LONG: error: attn-permute: seq-len must be at least 2 with seq-len^2 <= 268435456 (tiles are counted pair by pair), got 16385
// GAIN: error: attn-permute: min-gain must be in [0, 1), got 1
// GAIN-NEG: error: attn-permute: min-gain must be in [0, 1), got -0.5
// TARGET: error: attn-permute: {{.*}}missing.json
// TILES: error: attn-permute: 67108864 tiles of 1 x 1 at seq-len 8192 in 2 orders are too many to count (at most 16777216 tile counters); use a shorter seq-len
// UNSCHEDULED: warning: attn-permute: layer 0 is not a block schedule (run --attn-schedule first); it keeps the original order
// UNSCHEDULED: attn.layer 0
// UNSCHEDULED-NOT: layout
