// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib-dynamic.json" 2>&1 | FileCheck %s
// RUN: attn-opt %s --attn-select="target=%S/Inputs/select-target.json calibration=%S/Inputs/select-calib-tau.json" 2>&1 | FileCheck %s --check-prefix=TAU
//
// Dynamic candidates, priced from their budgets (docs/cost-model.md), on the
// one-slot target (1 ms a full 64 x 64 tile, 1.5 ms a partial one; no row,
// launch or index-element costs) at 1024 tokens (16 x 16 tiles):
//   causal (the reference): 120 full + 16 partial        -> 144 ms a head
//   window<before = 64>: 1 + 15 x 2 = 31 partial          -> 46.5 ms
//   intersect<causal, vertical_slash<64, 64, 64>>: its 64 diagonals as
//     window<before = 63> within causal, 31 partial, plus one gathered
//     tile of columns per query block, 16 partial: 47 x 1.5 = 70.5 ms;
//     the index: ceil(64/64) x ceil(1024/64) = 16 score tiles at half a
//     full tile: 8 ms                                    -> 78.5 ms
// At min-recall 0.95: head 0 -> vertical-slash (the window misses), head 1
// -> the window: 78.5 + 46.5 = 125 ms against 2 x 144 = 288 ms.
//
// Block top-k with tau > 0 (FlexPrefill's choice), select-calib-tau.json:
// intersect<causal, block_topk<block = 64, gamma = 0.9, max_blocks = 1,
// tau = 0.1>>: up to 3 x 1 = 3 key blocks per query block (a column and
// a slash group's two blocks) within causal: query blocks 0-2 their i
// full and 1 partial tiles, 3-15 three full: 42 full + 3 partial =
// 46.5 ms; the index: the pooled scores 16 x 16 / 4096 = 1/16 score tile,
// the last query block's 64 rows 2 x 1 x 16 = 32 score tiles, at half a
// full tile: 16.03125 ms -> 62.53125 ms a head, 125.0625 ms the layer.

attn.model @m {
  attn.layer 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0 to 1] = #attn.causal
  }
}

// CHECK: remark: attn-select: layer 0: sparse at 1024 tokens: predicted 125.000 ms, reference 288.000 ms (2.30x); 2 head groups
// CHECK: attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 64, slash = 64>>
// CHECK: attn.heads [1] = #attn.window<before = 64>

// TAU: remark: attn-select: layer 0: sparse at 1024 tokens: predicted 125.06{{[23]}} ms, reference 288.000 ms (2.30x); 1 head groups
// TAU: attn.heads [0, 1] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, gamma = 0.9, max_blocks = 1, tau = 0.1>>
