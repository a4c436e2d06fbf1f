// RUN: attn-opt %s | FileCheck %s
// RUN: attn-opt %s | attn-opt | FileCheck %s
// RUN: attn-opt %s --canonicalize | FileCheck %s --check-prefix=CANON
// RUN: attn-opt %s --attn-schedule --attn-lower-runs | FileCheck %s --check-prefix=SCHED
// RUN: attn-opt %s --attn-report=q-len=64 -o /dev/null | FileCheck %s --check-prefix=REPORT
// RUN: not attn-opt %s --attn-report="q-len=64 target=h100" -o /dev/null 2>&1 | FileCheck %s --check-prefix=COST
// RUN: not attn-viz %s --layer 0 --head 1 --q-len 8 2>&1 | FileCheck %s --check-prefix=VIZ
// RUN: rm -rf %t && attn-translate %s -o %t && FileCheck %s --check-prefix=EMIT < %t/manifest.json
//
// Dynamic patterns (keys chosen from the input at run time) parse, print,
// verify, compose with the static ones and canonicalize; schedules show
// their index-building step (lower-runs-dynamic.mlir); every consumer that
// needs a mask says it cannot take them, and the CUDA emitter names the
// ones bundles cannot hold (test/Target/Cuda/dynamic.mlir has the rest).

// CHECK-LABEL: attn.model @dynamic
attn.model @dynamic {
  attn.layer 0 heads = 8 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // CHECK: attn.heads [0] = #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096>
    attn.heads [0] = #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096>
    // CHECK: attn.heads [1] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 500, slash = 2000, first_columns = 4, last_diagonals = 64>>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 500, slash = 2000, first_columns = 4, last_diagonals = 64>>
    // Reals print in their shortest exact form; 1 reads as 1.0.
    // CHECK: attn.heads [2] = #attn.block_topk<block = 64, gamma = 0.9, min_blocks = 2, max_blocks = 256>
    attn.heads [2] = #attn.block_topk<block = 64, gamma = 0.90, min_blocks = 2, max_blocks = 256>
    // CHECK: attn.heads [3] = #attn.block_topk<block = 128, gamma = 1.0, tau = 0.1>
    attn.heads [3] = #attn.block_topk<block = 128, gamma = 1, tau = 1.0e-1>
    // CHECK: attn.heads [4] = #attn.block_topk<block = 64, top_k = 16>
    attn.heads [4] = #attn.block_topk<block = 64, top_k = 16>
    // CHECK: attn.heads [5] = #attn.routing<clusters = 16>
    attn.heads [5] = #attn.routing<clusters = 16, kmeans_iterations = 0>
    // CHECK: attn.heads [6] = #attn.union<#attn.a_shape<sink = 4, before = 64>, #attn.routing<clusters = 8, kmeans_iterations = 3>>
    attn.heads [6] = #attn.union<#attn.a_shape<sink = 4, before = 64>, #attn.routing<clusters = 8, kmeans_iterations = 3>>
    // CHECK: attn.heads [7] = #attn.causal
    attn.heads [7] = #attn.causal
  }
  // The algebra's identities hold for dynamic leaves too.
  attn.layer 1 heads = 6 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // CANON: attn.heads [0] = #attn.dense
    attn.heads [0] = #attn.union<#attn.dense, #attn.vertical_slash<last_q = 64, vertical = 10, slash = 60>>
    // CANON: attn.heads [1] = #attn.skip
    attn.heads [1] = #attn.intersect<#attn.skip, #attn.routing<clusters = 4>>
    // CANON: attn.heads [2] = #attn.skip
    attn.heads [2] = #attn.difference<#attn.block_topk<block = 64, top_k = 2>, #attn.dense>
    // CANON: attn.heads [3] = #attn.routing<clusters = 4>
    attn.heads [3] = #attn.intersect<#attn.dense, #attn.routing<clusters = 4>>
    // CANON: attn.heads [4] = #attn.routing<clusters = 4>
    attn.heads [4] = #attn.union<#attn.routing<clusters = 4>, #attn.routing<clusters = 4>>
    // CANON: attn.heads [5] = #attn.intersect<#attn.causal, #attn.routing<clusters = 4>>
    attn.heads [5] = #attn.intersect<#attn.causal, #attn.intersect<#attn.causal, #attn.routing<clusters = 4>>>
  }
}

// SCHED: attn.build_index #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096> layout "columns_and_diagonals"
// Bundles take every head here (head 4 of layer 1 after canonicalization,
// which folds its two identical routing leaves into one), block top-k with
// tau > 0 among them (FlexPrefill's kernels).
// EMIT: "family": "block_topk"
// EMIT-DAG: "tessera_bt_flex_rows
// EMIT-DAG: "tau": 0.1
// REPORT: 0        dynamic      1  #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096> [0]
// REPORT: 0         50.78%      1  #attn.causal [7]
// REPORT: mean density over 1 heads: 50.78%
// The cost model prices tau > 0; it refuses a pattern with two dynamic
// leaves (the report does not canonicalize first).
// COST: error: attn-report: head 4: the pattern has 2 dynamic leaves; a head group's index is built for one
// VIZ: attn-viz: error: head 1 has a dynamic pattern (its keys depend on the input); attn-viz draws static patterns only
