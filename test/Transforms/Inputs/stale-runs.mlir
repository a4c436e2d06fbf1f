// A window widened by hand after --attn-lower-runs: the runs are stale.
attn.model @m {
  attn.schedule 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 block = [64, 64] skipped = [] {
    attn.group 0 heads [0] = #attn.window<before = 512> runs {
      attn.run_interval keys [p0 - 256, p1] full [p1 - 256, p0] blocks [i - 4, i] full [i - 3, i - 1]
    }
  }
}
