// A Llama-3-8B-shaped model (32 layers, 32 query heads, 8 key/value heads,
// head_dim 128, bf16) with a per-head mix in the spirit of MInference's
// offline search: most heads keep attention sinks plus a local window
// (A-shape), some keep a longer sliding window, and a few "retrieval" heads
// keep full causal attention. The first two layers and the last layer stay
// fully causal, as long-context studies find them least sparse.
//
// The assignment is illustrative, not fitted to a checkpoint: it exercises
// the dialect with a realistic shape and mix.
//
//   attn-opt patterns/llama3-8b-sparse.mlir --attn-report="q-len=4096" -o /dev/null

attn.model @llama3_8b_sparse {
  attn.layer 0 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 31] = #attn.causal
  }
  attn.layer 1 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 31] = #attn.causal
  }
  attn.layer 2 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 7 to 12, 14 to 20, 22, 24 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [6, 23] = #attn.causal
  }
  attn.layer 3 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 8, 10 to 12, 14 to 20, 22 to 25, 27, 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [9, 26] = #attn.causal
  }
  attn.layer 4 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 11, 14 to 20, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21] = #attn.window<before = 2048>
    attn.heads [12, 29] = #attn.causal
  }
  attn.layer 5 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [1 to 4, 6 to 12, 14, 16 to 20, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [0, 15] = #attn.causal
  }
  attn.layer 6 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 2, 4, 6 to 12, 14 to 17, 19, 20, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [3, 18] = #attn.causal
  }
  attn.layer 7 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 7 to 12, 14 to 20, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 29] = #attn.window<before = 2048>
    attn.heads [6, 21] = #attn.causal
  }
  attn.layer 8 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 8, 10 to 12, 14 to 20, 22, 23, 25 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [9, 24] = #attn.causal
  }
  attn.layer 9 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 11, 14 to 20, 22 to 26, 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [12, 27] = #attn.causal
  }
  attn.layer 10 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 12, 14, 16 to 20, 22 to 28, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [15, 30] = #attn.causal
  }
  attn.layer 11 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0, 2 to 4, 6 to 12, 14 to 17, 19, 20, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [1, 18] = #attn.causal
  }
  attn.layer 12 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 3, 6 to 12, 14 to 20, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 29] = #attn.window<before = 2048>
    attn.heads [4, 21] = #attn.causal
  }
  attn.layer 13 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6, 8 to 12, 14 to 20, 22, 23, 25 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [7, 24] = #attn.causal
  }
  attn.layer 14 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 9, 11, 12, 14 to 20, 22 to 26, 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [10, 27] = #attn.causal
  }
  attn.layer 15 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 12, 14 to 20, 22 to 28, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 21, 29] = #attn.window<before = 2048>
    attn.heads [13, 30] = #attn.causal
  }
  attn.layer 16 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0, 2 to 4, 6 to 12, 14, 15, 17 to 20, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [1, 16] = #attn.causal
  }
  attn.layer 17 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 3, 6 to 12, 14 to 18, 20, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [4, 19] = #attn.causal
  }
  attn.layer 18 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6, 8 to 12, 14 to 20, 23 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [7, 22] = #attn.causal
  }
  attn.layer 19 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 9, 11, 12, 14 to 20, 22 to 24, 26 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [10, 25] = #attn.causal
  }
  attn.layer 20 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 12, 14 to 20, 22 to 27, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 21, 29] = #attn.window<before = 2048>
    attn.heads [13, 28] = #attn.causal
  }
  attn.layer 21 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 12, 14, 15, 17 to 20, 22 to 28, 30] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [16, 31] = #attn.causal
  }
  attn.layer 22 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0, 1, 3, 4, 6 to 12, 14 to 18, 20, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [2, 19] = #attn.causal
  }
  attn.layer 23 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 12, 14 to 20, 23 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [13, 21, 29] = #attn.window<before = 2048>
    attn.heads [5, 22] = #attn.causal
  }
  attn.layer 24 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6, 7, 9 to 12, 14 to 20, 22 to 24, 26 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [8, 25] = #attn.causal
  }
  attn.layer 25 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 10, 12, 14 to 20, 22 to 27, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [11, 28] = #attn.causal
  }
  attn.layer 26 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 12, 15 to 20, 22 to 28, 30] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [14, 31] = #attn.causal
  }
  attn.layer 27 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0, 1, 3, 4, 6 to 12, 14 to 16, 18 to 20, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [2, 17] = #attn.causal
  }
  attn.layer 28 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 12, 14 to 19, 22 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [13, 21, 29] = #attn.window<before = 2048>
    attn.heads [5, 20] = #attn.causal
  }
  attn.layer 29 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6, 7, 9 to 12, 14 to 20, 22, 24 to 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [8, 23] = #attn.causal
  }
  attn.layer 30 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 4, 6 to 10, 12, 14 to 20, 22 to 25, 27, 28, 30, 31] = #attn.a_shape<sink = 4, before = 1024>
    attn.heads [5, 13, 21, 29] = #attn.window<before = 2048>
    attn.heads [11, 26] = #attn.causal
  }
  attn.layer 31 heads = 32 kv_heads = 8 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 31] = #attn.causal
  }
}
