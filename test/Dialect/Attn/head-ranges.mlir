// RUN: attn-opt %s | FileCheck %s
// RUN: attn-opt %s | attn-opt | FileCheck %s
// RUN: attn-opt %s --attn-schedule | FileCheck %s --check-prefix=SCHED
//
// Head lists take inclusive ranges `a to b` mixed with single heads; the
// printer writes every run of three or more consecutive heads as a range and
// keeps shorter runs (and the list's order) as written.

// CHECK-LABEL: attn.model @ranges
attn.model @ranges {
  attn.layer 0 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    // CHECK: attn.heads [0 to 15] = #attn.causal
    attn.heads [0 to 15] = #attn.causal
    // CHECK: attn.heads [16, 17, 20 to 23] = #attn.window<before = 64>
    attn.heads [16, 17, 20, 21, 22, 23] = #attn.window<before = 64>
    // CHECK: attn.heads [18, 19] = #attn.dense
    attn.heads [18 to 19] = #attn.dense
    // CHECK: attn.heads [24 to 27, 31, 30, 29, 28] = #attn.skip
    attn.heads [24 to 27, 31, 30, 29, 28 to 28] = #attn.skip
  }
}

// The scheduled groups and the skipped heads print their lists the same way.
// SCHED: attn.schedule 0 {{.*}} skipped = [24 to 31] {
// SCHED-NEXT: attn.group 0 heads [0 to 15] = #attn.causal
// SCHED: heads [16, 17, 20 to 23] = #attn.window<before = 64>
