// The sm_90a twins of the dynamic attention (HopperDynamic.cuh) at both
// head dims. FakeDriverDynamic runs layer 0 (every head dynamic: head_dim
// 64, bf16, GQA) through the runtime's CUDA path on the fake device, by
// the twins (wgmma path) and by the mma.sync kernels (forced);
// DynamicEmulatorTest checks every layer against float64 on both paths
// (layers 1 and 2: each family's twin at head_dim 128; layer 2's position
// plants the clusters its routing heads find). Small on purpose: the
// runtime compiles the bundle with NVRTC once per path.
attn.model @dynamic_hopper {
  attn.layer 0 heads = 4 kv_heads = 2 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 16, vertical = 6, slash = 9, first_columns = 4, last_diagonals = 8>>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, gamma = 0.8, min_blocks = 1, max_blocks = 3>>
    attn.heads [2] = #attn.routing<clusters = 3>
    attn.heads [3] = #attn.union<#attn.window<before = 8>, #attn.intersect<#attn.causal, #attn.routing<clusters = 4, kmeans_iterations = 2>>>
  }
  attn.layer 1 heads = 2 kv_heads = 1 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, top_k = 2>>
    attn.heads [1] = #attn.union<#attn.window<before = 8>, #attn.vertical_slash<last_q = 16, vertical = 8, slash = 8, first_columns = 2, last_diagonals = 4>>
  }
  attn.layer 2 heads = 2 kv_heads = 2 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.union<#attn.window<before = 8>, #attn.intersect<#attn.causal, #attn.routing<clusters = 4, kmeans_iterations = 1>>>
    attn.heads [1] = #attn.difference<#attn.causal, #attn.routing<clusters = 3, kmeans_iterations = 2>>
  }
}
