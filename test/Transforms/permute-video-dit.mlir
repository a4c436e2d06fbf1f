// RUN: attn-opt %tessera_src/patterns/video-dit.mlir --attn-schedule --attn-permute="seq-len=16384 report=true" | FileCheck %s
// RUN: %python %S/Inputs/permute_tiles.py video-dit 4096 64 64 > %t.check
// RUN: attn-opt %tessera_src/patterns/video-dit.mlir --attn-schedule --attn-permute="seq-len=4096 report=true" -o /dev/null | FileCheck %t.check
//
// The shipped video-DiT layer at its own length (16 frames of 1024 tokens).
// Its multi-diagonal heads (diagonals every 1024 keys, 32 on each side)
// allow 6.3% of the pairs but, in the original order, touch 3 of every 16
// key blocks of each 64-row block (18.75%), none of them full (issue 23).
// After the period transpose a 64-row block holds residues 4i..4i+3 of all
// 16 frames, a key block residues 4j..4j+3; a pair is allowed exactly when
// its residues are within 32 of each other (mod 1024), so tile (i, j) is
// full when 4|j - i| + 3 <= 32 (|j - i| <= 7, 15 blocks) and partial when
// 4|j - i| - 3 <= 32 < 4|j - i| + 3 (|j - i| = 8, 2 blocks), the distance
// taken modulo 256 blocks: 17 * 256 = 4352 tiles (6.64%), 3840 full, 512
// partial. The grid heads gain too; the band+stripe, window and dense heads
// have no period and keep their order. At 4096 tokens the counts are
// checked against permute_tiles.py.

// CHECK: attn-permute: @video_dit layer 0 at Nq = Nk = 16384, tiles 64 x 64 (65536 a head), target h100
// CHECK-NEXT: group 0 heads [0-5] #attn.multi_diagonal<stride = 1024, width = 32>:
// CHECK-NEXT: original order visited 12288 (18.75%) full 0 partial 12288 work 100.0%{{$}}
// CHECK-NEXT: period_transpose<1024> visited 4352 (6.64%) full 3840 partial 512 work {{.*}} <- chosen
// CHECK-NEXT: group 1 heads [6-9] {{.*}}: no period, original order
// CHECK-NEXT: group 2 heads [10-13] #attn.grid<stride = 1024, vertical_width = 64, slash_width = 64>:
// CHECK-NEXT: original order
// CHECK-NEXT: period_transpose<1024> {{.*}} <- chosen
// CHECK-NEXT: group 3 heads [14-19] #attn.window<before = 512, after = 512>: no period, original order
// CHECK-NEXT: group 4 heads [20-21] #attn.dense: no period, original order

// CHECK-LABEL: attn.schedule 0
// CHECK-NEXT: attn.group 0 heads [0 to 5] = #attn.multi_diagonal<stride = 1024, width = 32> layout #attn.period_transpose<period = 1024>{{$}}
// CHECK-NEXT: attn.group 1 heads [6 to 9] = #attn.union<#attn.window<before = 256, after = 256>, #attn.vertical_stripe<ranges = [0, 1024]>>{{$}}
// CHECK-NEXT: attn.group 2 heads [10 to 13] = #attn.grid<stride = 1024, vertical_width = 64, slash_width = 64> layout #attn.period_transpose<period = 1024>{{$}}
// CHECK-NEXT: attn.group 3 heads [14 to 19] = #attn.window<before = 512, after = 512>{{$}}
// CHECK-NEXT: attn.group 4 heads [20, 21] = #attn.dense{{$}}
