// RUN: timeout 20 attn-opt %s --attn-report="q-len=1 k-len=1099511627776 target=h100" -o /dev/null | FileCheck %s
// RUN: timeout 20 attn-opt %s --attn-report="q-len=1 k-len=17179869184 target=h100" -o /dev/null | FileCheck %s --check-prefix=K34
// RUN: timeout 20 attn-opt %s --attn-report="q-len=65536 k-len=1099511627776 target=h100" -o /dev/null | FileCheck %s --check-prefix=LONGQ
//
// Predictions at the documented limit (2^40 keys) finish in well under a
// second: a head's run walks are bounded (docs/cost-model.md), and a query
// block's tiles past the bound are estimated from samples ("~"), not walked
// one run per period (2^33 runs a head here used to take minutes).
//
// Layer 0 by hand: two shards of 64 keys, so each head sees every other
// 64 x 64 tile (the target's), all full: 2^40 / 64 / 2 = 2^33 tiles a head,
// 2^34 for the two (2^28 at 2^34 keys). The runs are periodic, so the
// samples give the exact count.

attn.model @long {
  attn.layer 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.strided_shards<shards = 2, block = 64>
  }
  attn.layer 1 heads = 16 kv_heads = 4 head_dim = 128 dtype = f16 {
    attn.heads [0 to 15] = #attn.intersect<#attn.causal, #attn.union<#attn.window<before = 512>, #attn.strided_shards<shards = 8, block = 64, offset = 3>>>
  }
  attn.layer 2 heads = 2 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.window<before = 100>
  }
}

// CHECK: at Nq = 1, Nk = 1099511627776, batch 1
// CHECK:      0  ~17179869184          ~0  {{.*}}  2  #attn.strided_shards<shards = 2, block = 64> [0-1]
// CHECK:      1  ~{{[0-9]+}}  ~{{[0-9]+}}  {{.*}}  16  #attn.intersect
// Few runs: walked exactly, no mark. The one query (position 2^40 - 1)
// sees keys 2^40 - 101 to 2^40 - 1: the last tile whole (full), 37 keys of
// the one before (partial); two heads.
// CHECK:      2           2           2  {{.*}}  2  #attn.window<before = 100> [0-1]
// CHECK: model: predicted

// K34:      0  ~268435456          ~0  {{.*}}  2  #attn.strided_shards<shards = 2, block = 64> [0-1]

// LONGQ: at Nq = 65536, Nk = 1099511627776, batch 1
// LONGQ: model: predicted
