// RUN: %python %S/Inputs/permute_tiles.py interleaved 5420 64 64 > %t.check
// RUN: attn-opt %tessera_src/patterns/mminference-interleaved.mlir --attn-schedule --attn-permute="seq-len=5420 report=true" -o /dev/null | FileCheck %t.check
// RUN: attn-opt %tessera_src/patterns/mminference-interleaved.mlir --attn-schedule --attn-permute="seq-len=5420" --attn-lower-runs --verify-roundtrip | FileCheck %s
// RUN: attn-opt %tessera_src/patterns/mminference-interleaved.mlir --attn-schedule --attn-permute="seq-len=5420" --attn-lower-runs | attn-translate - --emit=manifest | FileCheck %s --check-prefix=EMIT
//
// Interleaved segments: two captions ([0, 200) and [2248, 2348)) between
// video frames of 1024 tokens. --attn-permute tries, beside the whole-
// sequence transpose and a prefix at each declared range's end, every
// declared stripe range kept together (`kept = [0, 200, 2248, 2348]`: both
// captions first, the video tokens of both segments sorted by their
// residue (t - 200) mod 1024). The grouping pays for the grid and the
// frame-diagonal heads; the counts are checked against permute_tiles.py
// (pattern definitions, its own sort). Kept ranges have no closed-form
// runs: each pair is classified (attn.permuted_runs says so), and the
// bundle's manifest carries the ranges.

// CHECK-LABEL: attn.schedule 0
// CHECK: attn.group 0 heads [0 to 5] = {{.*}} layout #attn.period_transpose<period = 1024, kept = [0, 200, 2248, 2348]> runs {
// CHECK: } {attn.permuted_runs = "pairwise (no closed form: kept ranges (interleaved segments): each pair classified)"}
// CHECK: attn.group 1 heads [6 to 11] = {{.*}} layout #attn.period_transpose<period = 1024, kept = [0, 200, 2248, 2348]> runs {
// CHECK: attn.group 2 heads [12 to 15] = {{.*}}window<before = 512, after = 512>> runs {
// CHECK-NOT: layout

// EMIT: "layouts": [
// EMIT-NEXT: {
// EMIT-NEXT: "group": 0,
// EMIT-NEXT: "kept": [
// EMIT-NEXT: 0,
// EMIT-NEXT: 200,
// EMIT-NEXT: 2248,
// EMIT-NEXT: 2348
// EMIT-NEXT: ],
// EMIT-NEXT: "period": 1024,
// EMIT-NEXT: "prefix": 0
