// RUN: attn-opt %s --attn-schedule --attn-permute="seq-len=4096" | FileCheck %s
// RUN: attn-opt %s --attn-schedule --attn-permute="seq-len=4096 report=true" -o /dev/null | FileCheck %s --check-prefix=REPORT
// RUN: %python %S/Inputs/permute_tiles.py permute 4096 64 64 > %t.check
// RUN: attn-opt %s --attn-schedule --attn-permute="seq-len=4096 report=true" -o /dev/null | FileCheck %t.check
// RUN: attn-opt %s --attn-schedule --attn-permute="seq-len=4096 min-gain=0.99" | FileCheck %s --check-prefix=NONE
// RUN: attn-opt %s --attn-schedule --attn-permute="seq-len=4096" --attn-lower-runs | FileCheck %s --check-prefix=RUNS
//
// --attn-permute on a layer of every kind of group: listed diagonals two
// frames apart (period 2048, the gcd of their offsets), a window with
// periodic key columns (the transpose would scatter the window: kept),
// causal and window heads (no period: kept), a grid with a phase and a
// dynamic group. The tile counts are checked against permute_tiles.py, which
// counts them from the patterns' definitions and a stable sort by t mod P.

attn.model @permute {
  attn.layer 0 heads = 8 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.multi_diagonal<offsets = [-2048, 0, 2048], width = 8>
    attn.heads [2] = #attn.union<#attn.window<before = 256, after = 256>, #attn.vertical_stripe<period = 512, width = 16>>
    attn.heads [3] = #attn.causal
    attn.heads [4] = #attn.window<before = 128>
    attn.heads [5] = #attn.grid<stride = 100, vertical_width = 3, slash_width = 5, phase = 7>
    attn.heads [6] = #attn.block_topk<block = 64, top_k = 4>
    attn.heads [7] = #attn.skip
  }
}

// CHECK-LABEL: attn.schedule 0
// CHECK-NEXT: attn.group 0 heads [0, 1] = #attn.multi_diagonal<offsets = [-2048, 0, 2048], width = 8> layout #attn.period_transpose<period = 2048>{{$}}
// CHECK-NEXT: attn.group 1 heads [2] = #attn.union<#attn.window<before = 256, after = 256>, #attn.vertical_stripe<period = 512, width = 16>>{{$}}
// CHECK-NEXT: attn.group 2 heads [3] = #attn.causal{{$}}
// CHECK-NEXT: attn.group 3 heads [4] = #attn.window<before = 128>{{$}}
// CHECK-NEXT: attn.group 4 heads [5] = #attn.grid<stride = 100, vertical_width = 3, slash_width = 5, phase = 7> layout #attn.period_transpose<period = 100>{{$}}
// CHECK-NEXT: attn.group 5 heads [6] = #attn.block_topk<block = 64, top_k = 4>{{$}}

// REPORT: attn-permute: @permute layer 0 at Nq = Nk = 4096, tiles 64 x 64 (4096 a head), target h100
// REPORT: group 0 heads [0-1]
// REPORT-NEXT: original order
// REPORT-NEXT: period_transpose<2048> {{.*}} <- chosen
// REPORT-NEXT: group 1 heads [2]
// REPORT-NEXT: original order {{.*}} <- chosen
// REPORT-NEXT: period_transpose<512>
// REPORT-NOT: chosen
// REPORT-NEXT: group 2 heads [3] #attn.causal: no period, original order
// REPORT-NEXT: group 3 heads [4] #attn.window<before = 128>: no period, original order
// REPORT-NEXT: group 4 heads [5]
// REPORT-NEXT: original order
// REPORT-NEXT: period_transpose<100> {{.*}} <- chosen
// REPORT-NEXT: group 5 heads [6] #attn.block_topk<block = 64, top_k = 4>: dynamic, original order

// A gain floor no layout reaches keeps every group in order.
// NONE-NOT: layout

// Lowering the runs keeps the layout and says how each permuted group walks:
// listed diagonals are not periodic, so no closed form (each pair is
// classified once per call); the grid's residues mod 100 have one.
// RUNS: attn.group 0 heads [0, 1] = {{.*}} layout #attn.period_transpose<period = 2048> runs {
// RUNS: } {attn.permuted_runs = "pairwise (no closed form: a listed-ranges leaf (listed diagonals or stripe ranges): not periodic)"}
// RUNS: attn.group 4 heads [5] = {{.*}} layout #attn.period_transpose<period = 100> runs {
// RUNS: } {attn.permuted_runs = "residues mod 100: R(p) = {k : union((k - 7) mod 100 < 3, (p - k - 7) mod 100 < 5)}"}
