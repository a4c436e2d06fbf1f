// RUN: %python %S/Inputs/permute_tiles.py mminference 4096 64 64 > %t.check
// RUN: attn-opt %tessera_src/patterns/mminference-video.mlir --attn-schedule --attn-permute="seq-len=4096 report=true" -o /dev/null | FileCheck %t.check
// RUN: attn-opt %tessera_src/patterns/mminference-video.mlir --attn-schedule --attn-permute="seq-len=4096" --attn-lower-runs | FileCheck %s
// RUN: attn-opt %tessera_src/patterns/mminference-video.mlir --attn-schedule --attn-permute="seq-len=4096" --attn-lower-runs | attn-opt | FileCheck %s
//
// Segment groupings: the MMInference-style layer (a 256-token prompt, then
// frames of 1024 video tokens) declares its prompt as stripe ranges
// [0, 256). --attn-permute tries, beside each period transpose of the whole
// sequence, the same transpose with the declared segment kept in place
// (`prefix = 256`: the prompt first, the video segment transposed on its
// own positions). The whole-sequence transpose mixes a prompt row into each
// of the first 256 residues (every query block holding one sees every key
// block) and does not pay; the grouping does, for the grid and the
// frame-diagonal heads. The counts are checked against permute_tiles.py
// (pattern definitions, prompt kept, the rest stably sorted by
// (t - 256) mod 1024); --attn-permute counts the prefixed transposes from
// their closed-form runs (layout::PermutedRuns), which the IR shows: the
// prompt rows see every key, the segment rows every prompt key and, of the
// segment, the residue relation of the grid or of the diagonals.

// CHECK-LABEL: attn.schedule 0
// CHECK: attn.group 0 heads [0 to 5] = {{.*}} layout #attn.period_transpose<period = 1024, prefix = 256> runs {
// CHECK: } {attn.permuted_runs = "prefix 256, residues mod 1024 after it: prompt rows: all keys; segment rows: prompt keys all, segment keys R(p) = {k : union((k - 256) mod 1024 < 32, (p - k - 256) mod 1024 < 32)}"}
// CHECK: attn.group 1 heads [6 to 11] = {{.*}} layout #attn.period_transpose<period = 1024, prefix = 256> runs {
// CHECK: } {attn.permuted_runs = "prefix 256, residues mod 1024 after it: prompt rows: all keys; segment rows: prompt keys all, segment keys R(p) = {k : (k - p + 16) mod 1024 < 33}"}
// CHECK: attn.group 2 heads [12 to 15] = {{.*}}window<before = 512, after = 512>> runs {
// CHECK-NOT: layout
