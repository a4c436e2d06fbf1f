// RUN: attn-opt %s --canonicalize --split-input-file | FileCheck %s
//
// The algebra of patterns. Every rewrite keeps the mask identical; the unit
// test SimplifyTest checks that on random patterns, this file pins each rule.

// CHECK-LABEL: attn.model @union_rules
attn.model @union_rules {
  attn.layer 0 heads = 12 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // Union with dense is dense.
    // CHECK: attn.heads [0] = #attn.dense{{$}}
    attn.heads [0] = #attn.union<#attn.window<before = 4>, #attn.dense>
    // Sink and window make an A-shape.
    // CHECK: attn.heads [1] = #attn.a_shape<sink = 4, before = 128>{{$}}
    attn.heads [1] = #attn.union<#attn.sink<4>, #attn.window<before = 128>>
    // Nested unions flatten; duplicates go; bands merge to the widest band;
    // sinks merge to the largest.
    // CHECK: attn.heads [2] = #attn.a_shape<sink = 8, before = 64, after = 2>{{$}}
    attn.heads [2] = #attn.union<#attn.sink<2>, #attn.union<#attn.window<before = 64>, #attn.sink<8>>, #attn.window<before = 3, after = 2>, #attn.sink<2>>
    // Skip adds nothing; a single remaining pattern stands alone.
    // CHECK: attn.heads [3] = #attn.causal{{$}}
    attn.heads [3] = #attn.union<#attn.skip, #attn.causal, #attn.causal>
    // Union of nothing but skips is skip.
    // CHECK: attn.heads [4] = #attn.skip{{$}}
    attn.heads [4] = #attn.union<#attn.skip, #attn.skip>
    // Causal contains sinks and bands without look-ahead.
    // CHECK: attn.heads [5] = #attn.causal{{$}}
    attn.heads [5] = #attn.union<#attn.a_shape<sink = 4, before = 64>, #attn.causal>
    // ... but not a band that looks ahead.
    // CHECK: attn.heads [6] = #attn.union<#attn.causal, #attn.window<before = 64, after = 1>>{{$}}
    attn.heads [6] = #attn.union<#attn.window<before = 64, after = 1>, #attn.causal, #attn.sink<4>>
    // Key ranges merge, touching ranges too.
    // CHECK: attn.heads [7] = #attn.vertical_stripe<ranges = [0, 12, 20, 24]>{{$}}
    attn.heads [7] = #attn.union<#attn.vertical_stripe<ranges = [0, 8, 20, 24]>, #attn.vertical_stripe<ranges = [4, 12]>>
    // CHECK: attn.heads [8] = #attn.horizontal_stripe<ranges = [0, 16]>{{$}}
    attn.heads [8] = #attn.union<#attn.horizontal_stripe<ranges = [0, 8]>, #attn.horizontal_stripe<ranges = [8, 16]>>
    // Patterns without rules keep their first-seen order, once each.
    // CHECK: attn.heads [9] = #attn.union<#attn.window<before = 16>, #attn.grid<stride = 8, vertical_width = 1>, #attn.strided_shards<shards = 2>>{{$}}
    attn.heads [9] = #attn.union<#attn.grid<stride = 8, vertical_width = 1>, #attn.window<before = 16>, #attn.strided_shards<shards = 2>, #attn.grid<stride = 8, vertical_width = 1>>
    // Children simplify first.
    // CHECK: attn.heads [10] = #attn.dense{{$}}
    attn.heads [10] = #attn.union<#attn.causal, #attn.multi_diagonal<stride = 4, width = 2>>
    // Periodic stripes are left alone.
    // CHECK: attn.heads [11] = #attn.union<#attn.vertical_stripe<period = 8, width = 1>, #attn.vertical_stripe<period = 8, width = 1, phase = 4>>{{$}}
    attn.heads [11] = #attn.union<#attn.vertical_stripe<period = 8, width = 1>, #attn.vertical_stripe<period = 8, width = 1, phase = 4>>
  }
}

// -----

// CHECK-LABEL: attn.model @intersect_rules
attn.model @intersect_rules {
  attn.layer 0 heads = 10 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // Intersection with dense is the other side.
    // CHECK: attn.heads [0] = #attn.window<before = 4>{{$}}
    attn.heads [0] = #attn.intersect<#attn.dense, #attn.window<before = 4>>
    // Intersection with skip is skip.
    // CHECK: attn.heads [1] = #attn.skip{{$}}
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.skip>
    // Causal clips a band's look-ahead.
    // CHECK: attn.heads [2] = #attn.window<before = 32>{{$}}
    attn.heads [2] = #attn.intersect<#attn.window<before = 32, after = 32>, #attn.causal>
    // Bands intersect to the narrowest; nested intersections flatten.
    // CHECK: attn.heads [3] = #attn.window<before = 2, after = 1>{{$}}
    attn.heads [3] = #attn.intersect<#attn.window<before = 8, after = 1>, #attn.intersect<#attn.window<before = 2, after = 5>, #attn.dense>>
    // Causal clips an A-shape and is absorbed.
    // CHECK: attn.heads [4] = #attn.a_shape<sink = 4, before = 16>{{$}}
    attn.heads [4] = #attn.intersect<#attn.a_shape<sink = 4, before = 16, after = 16>, #attn.causal>
    // Disjoint key ranges leave nothing: the head is found empty.
    // CHECK: attn.heads [5] = #attn.skip{{$}}
    attn.heads [5] = #attn.intersect<#attn.vertical_stripe<ranges = [0, 8]>, #attn.vertical_stripe<ranges = [8, 16]>>
    // Overlapping key ranges intersect.
    // CHECK: attn.heads [6] = #attn.vertical_stripe<ranges = [4, 8, 20, 22]>{{$}}
    attn.heads [6] = #attn.intersect<#attn.vertical_stripe<ranges = [0, 8, 20, 30]>, #attn.vertical_stripe<ranges = [4, 22]>>
    // Intersection of only dense is dense.
    // CHECK: attn.heads [7] = #attn.dense{{$}}
    attn.heads [7] = #attn.intersect<#attn.dense, #attn.dense>
    // Causal stays when nothing absorbs it.
    // CHECK: attn.heads [8] = #attn.intersect<#attn.causal, #attn.strided_shards<shards = 4, block = 64>>{{$}}
    attn.heads [8] = #attn.intersect<#attn.strided_shards<shards = 4, block = 64>, #attn.causal, #attn.causal>
    // Sinks intersect to the smallest; a sink lies within causal.
    // CHECK: attn.heads [9] = #attn.sink<2>{{$}}
    attn.heads [9] = #attn.intersect<#attn.sink<8>, #attn.causal, #attn.sink<2>>
  }
}

// -----

// CHECK-LABEL: attn.model @difference_rules
attn.model @difference_rules {
  attn.layer 0 heads = 6 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // Subtracting nothing.
    // CHECK: attn.heads [0] = #attn.causal{{$}}
    attn.heads [0] = #attn.difference<#attn.causal, #attn.skip>
    // A pattern minus itself, or minus a superset, is empty.
    // CHECK: attn.heads [1] = #attn.skip{{$}}
    attn.heads [1] = #attn.difference<#attn.window<before = 3>, #attn.window<before = 3>>
    // CHECK: attn.heads [2] = #attn.skip{{$}}
    attn.heads [2] = #attn.difference<#attn.window<before = 3>, #attn.causal>
    // CHECK: attn.heads [3] = #attn.skip{{$}}
    attn.heads [3] = #attn.difference<#attn.grid<stride = 8, vertical_width = 1>, #attn.dense>
    // CHECK: attn.heads [4] = #attn.skip{{$}}
    attn.heads [4] = #attn.difference<#attn.window<before = 3, after = 1>, #attn.window<before = 4, after = 1>>
    // Otherwise both sides simplify and the difference stays.
    // CHECK: attn.heads [5] = #attn.difference<#attn.causal, #attn.a_shape<sink = 4, before = 8>>{{$}}
    attn.heads [5] = #attn.difference<#attn.causal, #attn.union<#attn.sink<4>, #attn.window<before = 8>>>
  }
}

// -----

// CHECK-LABEL: attn.model @leaf_rules
attn.model @leaf_rules {
  attn.layer 0 heads = 11 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // Diagonals every 5 offsets, each 2 wide on each side, cover everything.
    // CHECK: attn.heads [0] = #attn.dense{{$}}
    attn.heads [0] = #attn.multi_diagonal<stride = 5, width = 2>
    // ... every 6 do not.
    // CHECK: attn.heads [1] = #attn.multi_diagonal<stride = 6, width = 2>{{$}}
    attn.heads [1] = #attn.multi_diagonal<stride = 6, width = 2>
    // One diagonal band through the main diagonal is a window.
    // CHECK: attn.heads [2] = #attn.window<before = 1, after = 5>{{$}}
    attn.heads [2] = #attn.multi_diagonal<offsets = [2], width = 3>
    // Touching bands through the main diagonal merge into a window.
    // CHECK: attn.heads [3] = #attn.window<before = 5>{{$}}
    attn.heads [3] = #attn.multi_diagonal<offsets = [-4, -1], width = 1>
    // A band that misses the main diagonal stays.
    // CHECK: attn.heads [4] = #attn.multi_diagonal<offsets = [4], width = 3>{{$}}
    attn.heads [4] = #attn.multi_diagonal<offsets = [4], width = 3>
    // A periodic stripe as wide as its period is everything.
    // CHECK: attn.heads [5] = #attn.dense{{$}}
    attn.heads [5] = #attn.vertical_stripe<period = 4, width = 4, phase = 1>
    // CHECK: attn.heads [6] = #attn.dense{{$}}
    attn.heads [6] = #attn.horizontal_stripe<period = 3, width = 3>
    // Grid lines as wide as the stride are everything.
    // CHECK: attn.heads [7] = #attn.dense{{$}}
    attn.heads [7] = #attn.grid<stride = 4, slash_width = 4>
    // One shard is every key.
    // CHECK: attn.heads [8] = #attn.dense{{$}}
    attn.heads [8] = #attn.strided_shards<shards = 1, block = 16>
    // An empty block list allows nothing.
    // CHECK: attn.heads [9] = #attn.skip{{$}}
    attn.heads [9] = #attn.block_sparse<block_q = 64, block_k = 64, blocks = []>
    // CHECK: attn.heads [10] = #attn.block_sparse<block_q = 64, block_k = 64, blocks = [0, 0]>{{$}}
    attn.heads [10] = #attn.block_sparse<block_q = 64, block_k = 64, blocks = [0, 0]>
  }
}
