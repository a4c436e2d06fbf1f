// RUN: attn-opt %s -split-input-file -verify-diagnostics
// RUN: echo "attn.model @m {}" | not attn-opt --attn-schedule="block-q=0" 2>&1 | FileCheck %s --check-prefix=OPTION
// RUN: not attn-opt %S/Inputs/deep.mlir --attn-schedule 2>&1 | FileCheck %s --check-prefix=DEEP

// OPTION: error: attn-schedule: block-q and block-k must be in [1, 1024], got 0 and 64
// DEEP: deep.mlir:3:3: error: attn-schedule: head 0: the pattern nests too deeply for the kernel's evaluation stack (needs 36 entries, at most 32)

attn.model @m {
  // expected-error @+1 {{'attn.schedule' op block must hold [block_q, block_k], got 1 values}}
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.schedule' op block sizes must be in [1, 1024], got 4096}}
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 4096] skipped = [] {
    attn.group 0 heads [0] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.schedule' op heads (3) must be a multiple of kv_heads (2) for grouped-query attention}}
  attn.schedule 0 heads = 3 kv_heads = 2 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'attn.group' op id must be 0 (groups are numbered in order), got 1}}
    attn.group 1 heads [0, 1] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [1] {
    // expected-error @+1 {{'attn.group' op head 1 is scheduled more than once}}
    attn.group 0 heads [0, 1] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.schedule' op head 1 is neither scheduled nor skipped}}
  attn.schedule 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.schedule' op head 2 is out of range for a layer of 2 heads}}
  attn.schedule 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [2] {
    attn.group 0 heads [0, 1] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'attn.group' op cannot hold #attn.skip; list skipped heads in the schedule's 'skipped'}}
    attn.group 0 heads [0, 1] = #attn.skip
  }
}

// -----

attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    // expected-error @+1 {{'attn.group' op needs at least one head}}
    attn.group 0 heads [] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.group' op expects parent op 'attn.schedule'}}
  attn.group 0 heads [0] = #attn.causal
}

// -----

attn.model @m {
  // expected-note @+1 {{first used here}}
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.causal
  }
  // expected-error @+1 {{'attn.schedule' op index 0 is used by another layer}}
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.causal
  }
}
