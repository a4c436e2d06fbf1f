// One self-attention layer of a video diffusion transformer: 16 latent frames
// of 32 x 32 = 1024 tokens (16384 tokens), 24 heads, head_dim 128, bf16.
// Bidirectional attention, with the head kinds Sparse-vDiT and MMInference
// observe in such models:
//   - multi-diagonal heads attend to the same place in other frames
//     (diagonals every 1024 tokens, a frame apart);
//   - vertical-stripe heads attend to the first frame (global keys) and to a
//     local neighbourhood;
//   - grid heads mix vertical and slash lines every frame;
//   - diagonal heads keep a symmetric band (spatial locality in a frame);
//   - two heads stay dense and two are skipped.
//
//   attn-opt patterns/video-dit.mlir --attn-report="q-len=4096" -o /dev/null
attn.model @video_dit {
  attn.layer 0 heads = 24 kv_heads = 24 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 5] = #attn.multi_diagonal<stride = 1024, width = 32>
    attn.heads [6 to 9] = #attn.union<#attn.window<before = 256, after = 256>, #attn.vertical_stripe<ranges = [0, 1024]>>
    attn.heads [10 to 13] = #attn.grid<stride = 1024, vertical_width = 64, slash_width = 64>
    attn.heads [14 to 19] = #attn.window<before = 512, after = 512>
    attn.heads [20, 21] = #attn.dense
    attn.heads [22, 23] = #attn.skip
  }
}
