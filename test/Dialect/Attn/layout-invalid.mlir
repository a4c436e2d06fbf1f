// RUN: attn-opt %s -split-input-file -verify-diagnostics
//
// A layout's errors: a period below 2 or past the largest extent, a
// negative prefix, a layout that is not one, and a layout on a dynamic
// pattern.

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' parameter 'period' must be in [2, 1099511627776], got 1}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 1>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' parameter 'period' must be in [2, 1099511627776], got -1024}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = -1024>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' parameter 'period' must be in [2, 1099511627776], got 1099511627777}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 1099511627777>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' parameter 'prefix' must be in [0, 1099511627776], got -256}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 1024, prefix = -256>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{invalid kind of attribute specified}}
    attn.group 0 heads [0] = #attn.causal layout #attn.window<before = 4>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'attn.group' op layout needs a static pattern; #attn.block_topk<block = 64, top_k = 4> is dynamic}}
    attn.group 0 heads [0] = #attn.block_topk<block = 64, top_k = 4> layout #attn.period_transpose<period = 64>
  }
}
