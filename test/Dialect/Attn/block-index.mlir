// RUN: attn-opt %s --verify-roundtrip | FileCheck %s
// RUN: attn-opt %s | attn-opt | FileCheck %s
// RUN: attn-opt %s --canonicalize | FileCheck %s --check-prefix=CANON
// RUN: attn-opt %s --attn-schedule --attn-lower-runs --verify-roundtrip | FileCheck %s --check-prefix=SCHED
// RUN: attn-opt %s --attn-report="q-len=256 target=h100" -o /dev/null | FileCheck %s --check-prefix=COST
// RUN: not attn-viz %s --layer 0 --head 0 --q-len 8 2>&1 | FileCheck %s --check-prefix=VIZ
// RUN: rm -rf %t && attn-translate %s -o %t && FileCheck %s --check-prefix=EMIT < %t/manifest.json
//
// The caller's block index (issue 23, item 3): a dynamic leaf whose key
// blocks come with the call. It parses, prints, composes with the static
// patterns, canonicalizes with the algebra, shows where its lists are
// read (attn.build_index ... layout "block_lists"), is priced as if every
// key block were listed, and goes into bundles with no index kernel.

// CHECK-LABEL: attn.model @block_index
attn.model @block_index {
  attn.layer 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 {
    // CHECK: attn.heads [0] = #attn.block_index<block_q = 64, block_k = 64>
    attn.heads [0] = #attn.block_index<block_q = 64, block_k = 64>
    // CHECK: attn.heads [1] = #attn.intersect<#attn.causal, #attn.block_index<block_q = 64, block_k = 64>>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.block_index<block_k = 64, block_q = 64>>
    // CHECK: attn.heads [2] = #attn.union<#attn.sink<4>, #attn.block_index<block_q = 64, block_k = 64>>
    attn.heads [2] = #attn.union<#attn.sink<4>, #attn.block_index<block_q = 64, block_k = 64>>
    // CHECK: attn.heads [3] = #attn.difference<#attn.block_index<block_q = 64, block_k = 64>, #attn.window<before = 7>>
    attn.heads [3] = #attn.difference<#attn.block_index<block_q = 64, block_k = 64>, #attn.window<before = 7>>
  }
  // The algebra's identities hold for it like for any leaf.
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // CHECK: attn.heads [0] = #attn.union<#attn.dense, #attn.block_index<block_q = 128, block_k = 256>>
    attn.heads [0] = #attn.union<#attn.dense, #attn.block_index<block_q = 128, block_k = 256>>
    // CHECK: attn.heads [1] = #attn.intersect<#attn.skip, #attn.block_index<block_q = 1024, block_k = 64>>
    attn.heads [1] = #attn.intersect<#attn.skip, #attn.block_index<block_q = 1024, block_k = 64>>
  }
}

// CANON: attn.layer 0
// CANON: attn.heads [0] = #attn.block_index<block_q = 64, block_k = 64>
// CANON: attn.layer 1
// CANON-DAG: = #attn.dense
// CANON-DAG: = #attn.skip

// SCHED: attn.group 0 heads [0] = #attn.block_index<block_q = 64, block_k = 64> runs {
// SCHED-NEXT: attn.build_index #attn.block_index<block_q = 64, block_k = 64> layout "block_lists"
// SCHED-NEXT: }
// SCHED: attn.group 1 heads [1] = #attn.intersect<#attn.causal, #attn.block_index<block_q = 64, block_k = 64>> runs {
// SCHED-NEXT: attn.run_intersect {
// SCHED-NEXT: attn.run_interval keys [0, p1] full [0, p0] blocks [0, i] full [0, i - 1]
// SCHED-NEXT: attn.build_index #attn.block_index<block_q = 64, block_k = 64> layout "block_lists"

// Priced as if the caller listed every key block (16 tiles of 64 x 64,
// as 8 kernel tiles of 128 x 64), with no index to build.
// COST: ~8 ~0 {{.*}} #attn.block_index<block_q = 64, block_k = 64> [0]  (index 0.000 ms)

// VIZ: head 0 has a dynamic pattern

// EMIT: "family": "block_index"
// EMIT-NEXT: "heads": [
// EMIT-NEXT: 0
// EMIT-NEXT: ],
// EMIT-NEXT: "kernels": [
// EMIT-NEXT: "tessera_bi_attend_bf16_d64"
// EMIT-NEXT: ],
// EMIT-NEXT: "params": {
// EMIT-NEXT: "block_k": 64,
// EMIT-NEXT: "block_q": 64
