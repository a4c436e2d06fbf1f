// RUN: attn-opt %s -split-input-file -verify-diagnostics
// RUN: attn-opt %s -split-input-file -verify-diagnostics 2>/dev/null | FileCheck %s

// Transposed runs written by hand: positions before row 0 (`begin`, a
// negative constant) round-trip as written.
// CHECK-LABEL: attn.group 0 heads [0] = #attn.causal runs {
// CHECK: attn.run_transposed {
// CHECK-NEXT: attn.run_positions [begin, k1 + 3] full [max(-5, k1), k0 + 2]
attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal runs {
      attn.run_interval keys [0, p1] full [0, p0]
      attn.run_transposed {
        attn.run_positions [begin, k1 + 3] full [max(-5, k1), k0 + 2]
      }
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal runs {
      // expected-error @+1 {{'attn.run_positions' op is only meaningful inside 'attn.run_transposed'}}
      attn.run_positions [k0, end] full [k1, end]
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal runs {
      attn.run_interval keys [0, p1] full [0, p0]
      attn.run_transposed {
        // expected-error @+1 {{'attn.run_interval' op has no transposed meaning: inside 'attn.run_transposed' use 'attn.run_positions'}}
        attn.run_interval keys [0, p1] full [0, p0]
      }
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal runs {
      attn.run_interval keys [0, p1] full [0, p0]
      attn.run_transposed {
        // expected-error @+1 {{'attn.run_positions' op block bounds do not follow from the positions at 64 x 64 tiles}}
        attn.run_positions [k0, end] full [k1, end] blocks [j, end] full [j, end]
      }
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [128, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal runs {
      attn.run_interval keys [0, p1] full [0, p0]
      attn.run_transposed {
        // expected-error @+1 {{'attn.run_positions' op block bounds need block_k to be a multiple of block_q, the schedule has 128 x 64}}
        attn.run_positions [k0, end] full [k1, end] blocks [j, end] full [j + 1, end]
      }
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'attn.group' op needs 1 run op before 'attn.run_transposed', got 0}}
    attn.group 0 heads [0] = #attn.causal runs {
      attn.run_transposed {
        attn.run_positions [k0, end] full [k1, end]
      }
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal runs {
      attn.run_interval keys [0, p1] full [0, p0]
      // expected-error @+1 {{'attn.run_transposed' op needs 1 run ops, got 2}}
      attn.run_transposed {
        attn.run_positions [k0, end] full [k1, end]
        attn.run_all
      }
    }
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal runs {
      attn.run_interval keys [0, p1] full [0, p0]
      attn.run_transposed {
        // expected-error @+1 {{expected 'k0' or 'k1' or an integer, got 'p0'}}
        attn.run_positions [p0, end] full [k1, end]
      }
    }
  }
}
