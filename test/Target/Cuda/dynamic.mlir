// RUN: attn-translate %s -o %t
// RUN: FileCheck %s --input-file=%t/manifest.json
// RUN: FileCheck %s --input-file=%t/bundle.cu --check-prefix=CU
// RUN: not attn-translate %S/Inputs/dynamic-errors.mlir -o %t.err 2>&1 | FileCheck %s --check-prefix=ERR
//
// Dynamic groups in bundles: the manifest lists each one with its family,
// parameters, the kernels in launch order and the programs of its pattern
// with the leaf read as dense ("with") and as skip ("without"); the static
// groups of the layer keep the ordinary launch table. The source holds the
// index kernels and the group tables.

attn.model @dyn {
  attn.layer 0 heads = 4 kv_heads = 2 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096, first_columns = 30, last_diagonals = 100>>
    attn.heads [1] = #attn.union<#attn.sink<4>, #attn.block_topk<block = 128, gamma = 0.9, min_blocks = 2, max_blocks = 64>>
    attn.heads [2] = #attn.intersect<#attn.causal, #attn.routing<clusters = 16, kmeans_iterations = 3>>
    attn.heads [3] = #attn.union<#attn.sink<4>, #attn.routing<clusters = 8>>
  }
  // FlexPrefill's per-head choice (tau > 0): two more index kernels after
  // the scores.
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 64 dtype = f16 {
    attn.heads [0, 1] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, gamma = 0.9, tau = 0.1>>
  }
}

// CHECK: "computed_heads": [],
// CHECK: "dynamic_groups": [
// CHECK: "family": "vertical_slash",
// CHECK: "kernels": [
// CHECK-NEXT: "tessera_vs_scores_bf16_d128",
// CHECK-NEXT: "tessera_vs_softmax",
// CHECK-NEXT: "tessera_vs_sums",
// CHECK-NEXT: "tessera_vs_select",
// CHECK-NEXT: "tessera_vs_attend_bf16_d128"
// CHECK: "params": {
// CHECK-NEXT: "first_columns": 30,
// CHECK-NEXT: "last_diagonals": 100,
// CHECK-NEXT: "last_q": 64,
// CHECK-NEXT: "slash": 6096,
// CHECK-NEXT: "vertical": 1000
// The leaf read as skip: intersect<causal, skip> allows nothing.
// CHECK: "without": {
// CHECK: "family": "block_topk",
// CHECK: "tessera_bt_take",
// CHECK: "block": 128,
// CHECK-NEXT: "gamma": 0.90000000000000002,
// CHECK-NEXT: "max_blocks": 64,
// CHECK-NEXT: "min_blocks": 2,
// CHECK-NEXT: "tau": 0,
// CHECK-NEXT: "top_k": 0
// CHECK: "family": "routing",
// CHECK: "tessera_rt_attend_bf16_d128"
// CHECK-NEXT: ],
// CHECK: "merge_without": false,
// CHECK: "clusters": 16,
// CHECK-NEXT: "kmeans_iterations": 3
// Routing under a union: the rest of the pattern walked and merged.
// CHECK: "family": "routing",
// CHECK: "tessera_rt_attend_bf16_d128",
// CHECK-NEXT: "tessera_rt_rest_bf16_d128"
// CHECK-NEXT: ],
// CHECK: "merge_without": true,
// Layer 1: tau > 0.
// CHECK: "family": "block_topk",
// CHECK: "kernels": [
// CHECK-NEXT: "tessera_bt_pool_f16",
// CHECK-NEXT: "tessera_bt_scores",
// CHECK-NEXT: "tessera_bt_flex_rows_f16",
// CHECK-NEXT: "tessera_bt_flex_mode",
// CHECK-NEXT: "tessera_bt_take",
// CHECK-NEXT: "tessera_bt_select",
// CHECK-NEXT: "tessera_bt_attend_f16_d64"
// CHECK: "tau": 0.10000000000000001,

// CU: #define TESSERA_KERNEL_DYNAMICINDEX_CUH
// CU: // P{{[0-9]+}}: #attn.intersect<#attn.causal, #attn.vertical_slash<{{.*}}>> [leaf: dense]
// CU: // P{{[0-9]+}}: #attn.intersect<#attn.causal, #attn.vertical_slash<{{.*}}>> [leaf: skip]
// CU: __device__ const DynGroupTable dynGroups_l0[] = {{[{][{]}}dynHeads_l0_g0, 1,
// CU: struct DynPats {
// CU: tessera_vs_attend_bf16_d128(tessera::kernel::AttnParams p, tessera::kernel::DynArgs a) {
// CU: tessera_bt_flex_rows_f16(tessera::kernel::AttnParams p, tessera::kernel::DynArgs a) {
// CU: btFlexRows<kF16>(p, a, g);
// CU: tessera_bt_flex_mode(tessera::kernel::AttnParams p, tessera::kernel::DynArgs a) {
// CU-NEXT: using namespace
// CU-NEXT: const DynGroupTable
// CU-NEXT: (void)g;
// CU-NEXT: btFlexMode(p, a);
// CU: TESSERA_EMU_DYN_KERNEL(tessera_rt_attend_bf16_d128)

// ERR: error: layer 0: head group 0 (heads from 0): block_topk with block = 96: the CUDA kernels need a multiple of 64
// ERR: error: layer 0: head group 1 (heads from 1): the pattern has 2 dynamic leaves; a head group's index is built for one
// ERR: error: layer 1: head group 0 (heads from 0): the dynamic kernels support head_dim 64, 96 and 128, not 256
// ERR-NOT: tau
