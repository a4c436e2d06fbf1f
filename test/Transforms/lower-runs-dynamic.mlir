// RUN: attn-opt %s --attn-schedule --attn-lower-runs | FileCheck %s
// RUN: attn-opt %s --attn-schedule --attn-lower-runs | attn-opt | FileCheck %s
// RUN: attn-translate %s -o %t && FileCheck %s --check-prefix=EMIT --input-file=%t/manifest.json
//
// The index of a dynamic pattern is built at run time: --attn-schedule
// keeps dynamic groups, and --attn-lower-runs puts an attn.build_index step
// where each dynamic leaf is, under the run combinators that join it to the
// static parts (whose runs are as for any static pattern). Bundles build
// the index with CUDA kernels (test/Target/Cuda/dynamic.mlir).

attn.model @dyn {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096>>
    attn.heads [1] = #attn.block_topk<block = 64, top_k = 16>
    attn.heads [2] = #attn.union<#attn.sink<4>, #attn.routing<clusters = 16>>
    attn.heads [3] = #attn.window<before = 128>
  }
}

// CHECK: attn.schedule 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
// CHECK-NEXT: attn.group 0 heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096>> runs {
// CHECK-NEXT: attn.run_intersect {
// CHECK-NEXT: attn.run_interval keys [0, p1] full [0, p0] blocks [0, i] full [0, i - 1]
// CHECK-NEXT: attn.build_index #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096> layout "columns_and_diagonals"
// CHECK-NEXT: }
// CHECK-NEXT: }
// CHECK-NEXT: attn.group 1 heads [1] = #attn.block_topk<block = 64, top_k = 16> runs {
// CHECK-NEXT: attn.build_index #attn.block_topk<block = 64, top_k = 16> layout "block_lists"
// CHECK-NEXT: }
// CHECK-NEXT: attn.group 2 heads [2] = #attn.union<#attn.sink<4>, #attn.routing<clusters = 16>> runs {
// CHECK-NEXT: attn.run_union {
// CHECK-NEXT: attn.run_interval keys [0, min(3, p1)] full [0, min(3, p0)]
// CHECK-NEXT: attn.build_index #attn.routing<clusters = 16> layout "segments"
// CHECK-NEXT: }
// CHECK-NEXT: }
// Static groups lower as before.
// CHECK-NEXT: attn.group 3 heads [3] = #attn.window<before = 128> runs {
// CHECK-NEXT: attn.run_interval keys [p0 - 128, p1]

// EMIT: "family": "vertical_slash"
// EMIT: "family": "block_topk"
// EMIT: "family": "routing"
// EMIT: "merge_without": true
