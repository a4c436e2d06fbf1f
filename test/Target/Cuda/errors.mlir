// RUN: not attn-translate %s --emit=cuda 2>&1 | FileCheck %s
// RUN: not attn-translate %s 2>&1 | FileCheck %s --check-prefix=NOOUT
// RUN: echo "" | not attn-translate - --emit=cuda 2>&1 | FileCheck %s --check-prefix=NOMODEL
// RUN: echo "attn.model @m {}" | not attn-translate - --emit=cuda 2>&1 | FileCheck %s --check-prefix=EMPTY

// NOOUT: attn-translate: error: a bundle needs an output directory: -o DIR
// NOMODEL: error: a bundle holds exactly one attn.model, the input has 0
// EMPTY: error: the model has no layer to emit

// Every unsupported layer is reported, at its location.
attn.model @m {
  // CHECK: errors.mlir:[[@LINE+1]]:3: error: layer 0: the CUDA kernel supports f16 and bf16, not f32
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = f32 {
    attn.heads [0] = #attn.causal
  }
  // CHECK: errors.mlir:[[@LINE+1]]:3: error: layer 1: the CUDA kernel supports head_dim 64, 96, 128 and 256, not 80
  attn.layer 1 heads = 1 kv_heads = 1 head_dim = 80 dtype = bf16 {
    attn.heads [0] = #attn.causal
  }
}
