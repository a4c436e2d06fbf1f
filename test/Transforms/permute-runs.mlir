// RUN: %python %S/Inputs/permute_tiles.py families 1000 64 64 > %t.check
// RUN: attn-opt %s --attn-schedule --attn-permute="seq-len=1000 report=true" -o /dev/null | FileCheck %t.check
// RUN: attn-opt %s --attn-schedule --attn-permute="seq-len=1000" --attn-lower-runs | FileCheck %s
// RUN: attn-opt %s --attn-schedule --attn-permute="seq-len=1000" --attn-lower-runs | attn-opt | FileCheck %s
//
// The closed-form runs of permuted groups, one group per periodic family
// and per combinator, at a length no period divides (1000 tokens, tiles of
// 64 x 64). Each transpose the pattern is residue-only for is counted by
// --attn-permute from its closed-form runs (tessera/cpu/Layout.h,
// PermutedRuns: the runs the CPU executor walks); the intersection's
// transpose by 32 is not residue-only (its diagonals repeat every 64) and
// is counted pair by pair. permute_tiles.py counts every transpose from the
// patterns' definitions and a stable sort by t mod P: the two must agree.
// --attn-lower-runs shows each permuted group's residue relation R(p): a
// query block whose rows hold residues c0..c1 visits the key blocks that
// hold a residue of R(c0) u ... u R(c1), FULL inside their intersection.
//
// Layer 1: segment groupings (a prompt of 100 or 70 tokens kept in place,
// not a multiple of the tiles, before a segment no period divides). The
// prefixed transposes whose leaves are, on each quadrant (prompt / segment
// rows x prompt / segment keys), all, none or residue-only are counted
// from their closed-form runs too; group 3's window is none of these on
// the segment, so its prefixed transpose is counted pair by pair. The IR
// shows the quadrants: group 1's prompt rows see the diagonals' keys of
// the segment (residues of their own positions).

attn.model @families {
  attn.layer 0 heads = 8 kv_heads = 8 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.multi_diagonal<stride = 96, width = 3>
    attn.heads [1] = #attn.grid<stride = 50, vertical_width = 2, slash_width = 3, phase = 5>
    attn.heads [2] = #attn.strided_shards<shards = 4, block = 8>
    attn.heads [3] = #attn.vertical_stripe<period = 40, width = 4, phase = 2>
    attn.heads [4] = #attn.horizontal_stripe<period = 25, width = 2>
    attn.heads [5] = #attn.intersect<#attn.multi_diagonal<stride = 64, width = 8>, #attn.vertical_stripe<period = 32, width = 16>>
    attn.heads [6] = #attn.difference<#attn.multi_diagonal<stride = 64, width = 4>, #attn.horizontal_stripe<period = 64, width = 8>>
    attn.heads [7] = #attn.causal
  }
  attn.layer 1 heads = 4 kv_heads = 4 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.union<#attn.vertical_stripe<ranges = [0, 100]>, #attn.horizontal_stripe<ranges = [0, 100]>, #attn.grid<stride = 70, vertical_width = 2, slash_width = 3, phase = 30>>
    attn.heads [1] = #attn.union<#attn.vertical_stripe<ranges = [0, 100]>, #attn.multi_diagonal<stride = 96, width = 3>>
    attn.heads [2] = #attn.difference<#attn.multi_diagonal<stride = 64, width = 4>, #attn.vertical_stripe<ranges = [0, 70]>>
    attn.heads [3] = #attn.intersect<#attn.window<before = 200, after = 200>, #attn.union<#attn.vertical_stripe<ranges = [0, 100]>, #attn.multi_diagonal<stride = 50, width = 2>>>
  }
}

// CHECK-LABEL: attn.schedule 0
// CHECK: attn.group 0 {{.*}} layout #attn.period_transpose<period = 96> runs
// CHECK: } {attn.permuted_runs = "residues mod 96: R(p) = {k : (k - p + 3) mod 96 < 7}"}
// CHECK: attn.group 1 {{.*}} layout #attn.period_transpose<period = 50> runs
// CHECK: } {attn.permuted_runs = "residues mod 50: R(p) = {k : union((k - 5) mod 50 < 2, (p - k - 5) mod 50 < 3)}"}
// CHECK: attn.group 2 {{.*}} layout #attn.period_transpose<period = 32> runs
// CHECK: } {attn.permuted_runs = "residues mod 32: R(p) = {k : k div 8 mod 4 = (h + 0) mod 4}"}
// CHECK: attn.group 3 {{.*}} layout #attn.period_transpose<period = 40> runs
// CHECK: } {attn.permuted_runs = "residues mod 40: R(p) = {k : (k - 2) mod 40 < 4}"}
// CHECK: attn.group 4 {{.*}} layout #attn.period_transpose<period = 25> runs
// CHECK: } {attn.permuted_runs = "residues mod 25: R(p) = {k : p mod 25 < 2}"}
// CHECK: attn.group 5 {{.*}} layout #attn.period_transpose<period = 64> runs
// CHECK: } {attn.permuted_runs = "residues mod 64: R(p) = {k : intersect((k - p + 8) mod 64 < 17, k mod 32 < 16)}"}
// CHECK: attn.group 6 {{.*}} layout #attn.period_transpose<period = 64> runs
// CHECK: } {attn.permuted_runs = "residues mod 64: R(p) = {k : difference((k - p + 4) mod 64 < 9, p mod 64 < 8)}"}
// CHECK: attn.group 7 heads [7] = #attn.causal runs
// CHECK-NOT: permuted_runs

// CHECK-LABEL: attn.schedule 1
// CHECK: attn.group 0 {{.*}} layout #attn.period_transpose<period = 70, prefix = 100> runs
// CHECK: } {attn.permuted_runs = "prefix 100, residues mod 70 after it: prompt rows: all keys; segment rows: prompt keys all, segment keys R(p) = {k : union((k - 30) mod 70 < 2, (p - k - 30) mod 70 < 3)}"}
// CHECK: attn.group 1 {{.*}} layout #attn.period_transpose<period = 96, prefix = 100> runs
// CHECK: } {attn.permuted_runs = "prefix 100, residues mod 96 after it: prompt rows: prompt keys all, segment keys R(p) = {k : (k - p + 3) mod 96 < 7}; segment rows: prompt keys all, segment keys R(p) = {k : (k - p + 3) mod 96 < 7}"}
// CHECK: attn.group 2 {{.*}} layout #attn.period_transpose<period = 64> runs
// CHECK: } {attn.permuted_runs = "pairwise (no closed form: a listed-ranges leaf (listed diagonals or stripe ranges): not periodic)"}
// CHECK: attn.group 3 heads [3] = #attn.intersect<{{.*}}>> runs
// CHECK-NOT: permuted_runs
