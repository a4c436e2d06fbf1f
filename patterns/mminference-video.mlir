// An MMInference-style multimodal layer: a prompt of 256 text tokens, then
// 15 latent frames of 32 x 32 = 1024 video tokens (15616 tokens), 16 heads,
// head_dim 128, bf16, bidirectional. MMInference observes that text and
// video tokens attend differently: the text segment is global (every token
// sees the prompt and the prompt sees every token), and in the video segment
// its grid heads keep vertical and slash lines every frame while its
// frame-diagonal heads keep the same place in other frames.
//   - grid heads: the prompt, plus lines every 1024 tokens (their phase 256
//     puts them on the frame boundaries of the video segment);
//   - frame-diagonal heads: the prompt, plus diagonals a frame apart;
//   - local heads: the prompt, plus a band of half a frame.
// The prompt is written as ranges, the video's structure as periods: the
// text breaks the video's periodicity (a period transpose of the whole
// sequence mixes prompt rows into every residue), which is what MMInference's
// layout, text and frames grouped apart, avoids (docs/patterns.md "Layouts").
//
//   attn-opt patterns/mminference-video.mlir --attn-schedule --attn-permute="seq-len=15616 report=true" -o /dev/null
attn.model @mminference_video {
  attn.layer 0 heads = 16 kv_heads = 16 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 5] = #attn.union<#attn.vertical_stripe<ranges = [0, 256]>, #attn.horizontal_stripe<ranges = [0, 256]>, #attn.grid<stride = 1024, vertical_width = 32, slash_width = 32, phase = 256>>
    attn.heads [6 to 11] = #attn.union<#attn.vertical_stripe<ranges = [0, 256]>, #attn.horizontal_stripe<ranges = [0, 256]>, #attn.multi_diagonal<stride = 1024, width = 16>>
    attn.heads [12 to 15] = #attn.union<#attn.vertical_stripe<ranges = [0, 256]>, #attn.horizontal_stripe<ranges = [0, 256]>, #attn.window<before = 512, after = 512>>
  }
}
