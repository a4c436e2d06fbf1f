// RUN: attn-opt %s | attn-opt | FileCheck %s
// RUN: attn-opt %s --mlir-print-op-generic | attn-opt | FileCheck %s
// RUN: attn-opt %s --attn-lower-runs | FileCheck %s --check-prefix=RUNS
// RUN: attn-opt %s --verify-roundtrip | FileCheck %s
//
// A head group's layout (the token permutation --attn-permute picks) prints
// and parses back to itself, in the pretty and the generic form, and stays
// on the group when its runs are lowered.

attn.model @layouts {
  attn.schedule 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16
      block = [64, 64] skipped = [] {
    attn.group 0 heads [0, 1] = #attn.multi_diagonal<stride = 1024, width = 32> layout #attn.period_transpose<period = 1024>
    attn.group 1 heads [2] = #attn.grid<stride = 7, vertical_width = 1> layout #attn.period_transpose<period = 2>
    attn.group 2 heads [3] = #attn.causal
  }
  attn.schedule 1 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16
      block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.grid<stride = 1024, vertical_width = 32> layout #attn.period_transpose<period = 1024, prefix = 256>
    attn.group 1 heads [1] = #attn.grid<stride = 64, vertical_width = 2> layout #attn.period_transpose<period = 64, prefix = 0>
  }
  attn.schedule 2 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16
      block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.union<#attn.vertical_stripe<ranges = [0, 200, 2248, 2348]>, #attn.grid<stride = 1024, vertical_width = 32, phase = 200>> layout #attn.period_transpose<period = 1024, kept = [0, 200, 2248, 2348]>
    attn.group 1 heads [1] = #attn.multi_diagonal<stride = 64, width = 2> layout #attn.period_transpose<period = 64, kept = [10, 20]>
  }
}

// CHECK-LABEL: attn.model @layouts
// CHECK: attn.group 0 heads [0, 1] = #attn.multi_diagonal<stride = 1024, width = 32> layout #attn.period_transpose<period = 1024>{{$}}
// CHECK-NEXT: attn.group 1 heads [2] = #attn.grid<stride = 7, vertical_width = 1> layout #attn.period_transpose<period = 2>{{$}}
// CHECK-NEXT: attn.group 2 heads [3] = #attn.causal{{$}}
// A prefix prints when it is not 0, the default.
// CHECK: attn.group 0 heads [0] = #attn.grid<stride = 1024, vertical_width = 32> layout #attn.period_transpose<period = 1024, prefix = 256>{{$}}
// CHECK-NEXT: attn.group 1 heads [1] = #attn.grid<stride = 64, vertical_width = 2> layout #attn.period_transpose<period = 64>{{$}}
// Kept ranges (interleaved segments) print as a list after the period.
// CHECK: attn.group 0 heads [0] = {{.*}} layout #attn.period_transpose<period = 1024, kept = [0, 200, 2248, 2348]>{{$}}
// CHECK-NEXT: attn.group 1 heads [1] = {{.*}} layout #attn.period_transpose<period = 64, kept = [10, 20]>{{$}}

// RUNS: attn.group 0 heads [0, 1] = #attn.multi_diagonal<stride = 1024, width = 32> layout #attn.period_transpose<period = 1024> runs {
// RUNS: attn.group 2 heads [3] = #attn.causal runs {
// RUNS: layout #attn.period_transpose<period = 1024, kept = [0, 200, 2248, 2348]> runs {
// RUNS: attn.permuted_runs = "pairwise (no closed form: kept ranges (interleaved segments): each pair classified)"
