// RUN: attn-opt %s --attn-report="q-len=8192 target=h100" -o /dev/null | FileCheck %s
//
// The cost model prices dynamic groups from their budgets: tiles marked
// "~" (estimated), the index kernels' work shown, and the layer's time
// including them (CostModelTest has the arithmetic by hand).

attn.model @dyn {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 2000, first_columns = 30, last_diagonals = 100>>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, top_k = 16>>
    attn.heads [2] = #attn.union<#attn.window<before = 64>, #attn.routing<clusters = 8, kmeans_iterations = 1>>
    attn.heads [3] = #attn.causal
  }
}

// The static group first, then the dynamic ones in file order.
// CHECK: layer full partial work (ms) heads pattern [heads]
// CHECK-NEXT: 0 {{[0-9]+}} 128 {{[0-9.]+}} 1 #attn.causal [3]
// CHECK-NEXT: 0 ~{{[0-9]+}} ~{{[0-9]+}} {{[0-9.]+}} 1 #attn.intersect<#attn.causal, #attn.vertical_slash<{{.*}}>> [0] (index {{[0-9.]+}} ms)
// CHECK-NEXT: 0 ~{{[0-9]+}} ~{{[0-9]+}} {{[0-9.]+}} 1 #attn.intersect<#attn.causal, #attn.block_topk<block = 64, top_k = 16>> [1] (index {{[0-9.]+}} ms)
// CHECK-NEXT: 0 ~0 ~{{[0-9]+}} {{[0-9.]+}} 1 #attn.union<#attn.window<before = 64>, #attn.routing<{{.*}}>> [2] (index {{[0-9.]+}} ms)
// CHECK-NEXT: layer 0: predicted {{[0-9.]+}} ms, dense {{[0-9.]+}} ms ({{[0-9.]+}}x)
