// RUN: attn-opt %s -split-input-file -verify-diagnostics
// RUN: not attn-translate %S/Inputs/stale-runs.mlir --emit=cuda 2>&1 | FileCheck %s --check-prefix=STALE

// STALE: stale-runs.mlir:4:5: error: the runs of group 0 are not those of its pattern; rerun --attn-lower-runs after changing a pattern

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.window<before = 256> runs {
      // expected-error @+1 {{'attn.run_interval' op block bounds do not follow from the key bounds at 64 x 64 tiles}}
      attn.run_interval keys [p0 - 256, p1] full [p1 - 256, p0] blocks [i - 3, i] full [i - 3, i - 1]
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 48] skipped = [] {
    attn.group 0 heads [0] = #attn.causal runs {
      // expected-error @+1 {{'attn.run_interval' op block bounds need block_q to be a multiple of block_k, the schedule has 64 x 48}}
      attn.run_interval keys [0, p1] full [0, p0] blocks [0, i] full [0, i - 1]
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal runs {
      // expected-error @+1 {{expected 'p0' or 'p1' or an integer, got 'q0'}}
      attn.run_interval keys [0, q0] full [0, p0]
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.multi_diagonal<stride = 8> runs {
      // expected-error @+1 {{'attn.run_periodic' op axis must be "key", "diagonal" or "row", got "column"}}
      attn.run_periodic "column" period = 8 width = 1 phase = 0
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.multi_diagonal<stride = 8> runs {
      // expected-error @+1 {{'attn.run_periodic' op period and width must be at least 1, got 0 and 1}}
      attn.run_periodic "diagonal" period = 0 width = 1 phase = 0
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.vertical_stripe<ranges = [0, 4, 8, 12]> runs {
      // expected-error @+1 {{'attn.run_listed' op ranges must be sorted, disjoint and not touching}}
      attn.run_listed "key" ranges = [8, 12, 0, 4]
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.vertical_stripe<ranges = [0, 4]> runs {
      // expected-error @+1 {{'attn.run_listed' op range [4, 4) is empty}}
      attn.run_listed "key" ranges = [4, 4]
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.difference<#attn.causal, #attn.window<before = 3>> runs {
      // expected-error @+1 {{'attn.run_difference' op needs 2 run ops, got 1}}
      attn.run_difference {
        attn.run_all
      }
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'attn.group' op needs 1 run ops, got 2}}
    attn.group 0 heads [0] = #attn.dense runs {
      attn.run_all
      attn.run_all
    }
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'attn.run_all' op expects parent op to be one of 'attn.group, attn.run_union, attn.run_intersect, attn.run_difference, attn.run_transposed'}}
    attn.run_all
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal runs {
      // expected-error @+1 {{'attn.build_index' op builds the index of a dynamic leaf (vertical_slash, block_topk, routing, block_index), not of #attn.causal}}
      attn.build_index #attn.causal layout "columns_and_diagonals"
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.routing<clusters = 4> runs {
      // expected-error @+1 {{'attn.build_index' op layout of #attn.routing<clusters = 4> is "segments", got "block_lists"}}
      attn.build_index #attn.routing<clusters = 4> layout "block_lists"
    }
  }
}
