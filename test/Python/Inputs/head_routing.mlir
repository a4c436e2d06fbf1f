// Static heads for head-routing.test (per-token head routing, MoH): causal,
// sliding windows short of a query block (the edge where compacted rows
// must keep their positions), an A-shape, a bidirectional window and a
// skipped head; GQA (6 heads over 3 kv heads).
attn.model @head_routing {
  attn.layer 0 heads = 6 kv_heads = 3 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.causal
    attn.heads [1, 2] = #attn.window<before = 37>
    attn.heads [3] = #attn.a_shape<sink = 4, before = 20>
    attn.heads [4] = #attn.window<before = 30, after = 30>
    attn.heads [5] = #attn.skip
  }
}
