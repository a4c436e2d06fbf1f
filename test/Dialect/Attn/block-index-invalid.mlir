// RUN: attn-opt %s --split-input-file --verify-diagnostics
//
// block_index's block sizes: multiples of 64 (whole key tiles) in
// [64, 1024]; both are required.

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_index' parameter 'block_q' must be a multiple of 64 in [64, 1024], got 96}}
    attn.heads [0] = #attn.block_index<block_q = 96, block_k = 64>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_index' parameter 'block_k' must be a multiple of 64 in [64, 1024], got 32}}
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.block_index<block_q = 64, block_k = 32>>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_index' parameter 'block_k' must be a multiple of 64 in [64, 1024], got 2048}}
    attn.heads [0] = #attn.block_index<block_q = 64, block_k = 2048>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_index' parameter 'block_q' must be a multiple of 64 in [64, 1024], got 0}}
    attn.heads [0] = #attn.block_index<block_q = 0, block_k = 64>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{expected ','}}
    attn.heads [0] = #attn.block_index<block_q = 64>
  }
}
