// RUN: attn-opt %s -split-input-file -verify-diagnostics
//
// A layout's errors: a period below 2 or past the largest extent, a
// negative prefix, a layout that is not one, a layout on a dynamic
// pattern, and bad kept ranges (odd, empty, unsorted, touching, negative,
// with a prefix, a prefix spelled as ranges, more than 64).

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

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' kept must hold [begin, end) pairs, got 3 values}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 64, kept = [10, 20, 30]>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' kept range 0 [10, 10) is empty}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 64, kept = [10, 10]>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' kept range 1 [5, 8) overlaps, touches or precedes the range before it (merge touching ranges)}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 64, kept = [10, 20, 5, 8]>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' kept range 1 [20, 30) overlaps, touches or precedes the range before it (merge touching ranges)}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 64, kept = [10, 20, 20, 30]>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' parameter 'kept' holds -4, outside [0, 1099511627776]}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 64, kept = [-4, 20]>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' takes 'prefix' or 'kept', not both (prefix = S is kept = [0, S])}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 64, prefix = 8, kept = [10, 20]>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' kept = [0, 20] is a prefix: write prefix = 20}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 64, kept = [0, 20]>
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'period_transpose' holds 65 kept ranges, more than the limit of 64}}
    attn.group 0 heads [0] = #attn.causal layout #attn.period_transpose<period = 64, kept = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 66, 67, 68, 69, 70, 71, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 83, 84, 85, 86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 100, 101, 102, 103, 104, 105, 106, 107, 108, 109, 110, 111, 112, 113, 114, 115, 116, 117, 118, 119, 120, 121, 122, 123, 124, 125, 126, 127, 128, 129, 130]>
  }
}
