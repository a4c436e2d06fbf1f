// An MMInference-style layer with interleaved modalities: text and video
// segments alternate (a caption, two latent frames, a second caption, three
// more frames). 200 text tokens [0, 200), frames of 32 x 32 = 1024 video
// tokens [200, 2248), 100 text tokens [2248, 2348), three frames
// [2348, 5420): 5420 tokens, 16 heads, head_dim 128, bf16, bidirectional.
// Both captions are global (every token sees them, they see every token);
// the video heads are those of mminference-video.mlir:
//   - grid heads: the text, plus lines every 1024 tokens from the first
//     frame's start;
//   - frame-diagonal heads: the text, plus diagonals a frame apart;
//   - local heads: the text, plus a band of half a frame.
// The text is written as stripe ranges, the video's structure as periods.
// A prefix keeps only [0, 200) in place: the second caption's rows, inside
// the transposed video, mix into 100 residues. --attn-permute's grouping of
// every declared range, `kept = [0, 200, 2248, 2348]`, puts both captions
// first and transposes the five frames together (docs/patterns.md,
// "Interleaved segments").
//
//   attn-opt patterns/mminference-interleaved.mlir --attn-schedule --attn-permute="seq-len=5420 report=true" -o /dev/null
attn.model @mminference_interleaved {
  attn.layer 0 heads = 16 kv_heads = 16 head_dim = 128 dtype = bf16 {
    attn.heads [0 to 5] = #attn.union<#attn.vertical_stripe<ranges = [0, 200, 2248, 2348]>, #attn.horizontal_stripe<ranges = [0, 200, 2248, 2348]>, #attn.grid<stride = 1024, vertical_width = 32, slash_width = 32, phase = 200>>
    attn.heads [6 to 11] = #attn.union<#attn.vertical_stripe<ranges = [0, 200, 2248, 2348]>, #attn.horizontal_stripe<ranges = [0, 200, 2248, 2348]>, #attn.multi_diagonal<stride = 1024, width = 16>>
    attn.heads [12 to 15] = #attn.union<#attn.vertical_stripe<ranges = [0, 200, 2248, 2348]>, #attn.horizontal_stripe<ranges = [0, 200, 2248, 2348]>, #attn.window<before = 512, after = 512>>
  }
}
