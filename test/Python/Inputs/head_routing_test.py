"""Per-token head routing (head-routing.test): Bundle.attention and
attention_run with head_active on layer 0 of head_routing.mlir, on the CPU,
against float64 attention masked pair by pair from docs/patterns.md's
definitions, with the inactive (row, head) pairs set to o = 0 and
lse = -inf; then bad input refused by name."""
import sys

import numpy as np

import tessera

bundle_dir = sys.argv[1]
ctx = tessera.Context("cpu")
bundle = ctx.load(bundle_dir)
H, HKV, D = 6, 3, 64
G = H // HKV


def allowed(h, p, k):
    """Head h's pairs (query positions p [Nq, 1], keys k [1, Nk])."""
    d = k - p
    if h == 0:
        return d <= 0
    if h in (1, 2):
        return (d <= 0) & (d >= -37)
    if h == 3:
        return (d <= 0) & ((k < 4) | (d >= -20))
    if h == 4:
        return (d >= -30) & (d <= 30)
    return np.zeros_like(d, dtype=bool)  # skipped


def reference(q, k, v, active, q_pos):
    """float64 o [Nq, H, D], lse [H, Nq] of one sequence; q_pos [Nq]."""
    nq, nk = q.shape[0], k.shape[0]
    p = q_pos[:, None]
    key = np.arange(nk)[None, :]
    o = np.zeros((nq, H, D))
    lse = np.full((H, nq), -np.inf)
    for h in range(H):
        mask = allowed(h, p, key) & (active[:, h:h + 1] != 0)
        s = q[:, h].astype(np.float64) @ k[:, h // G].astype(np.float64).T
        s = np.where(mask, s / np.sqrt(D), -np.inf)
        m = s.max(axis=1, keepdims=True)
        seen = np.isfinite(m[:, 0])
        e = np.where(mask, np.exp(s - np.where(np.isfinite(m), m, 0)), 0)
        l = e.sum(axis=1)
        o[seen, h] = (e[seen] / l[seen, None]) @ v[:, h // G].astype(
            np.float64)
        lse[h, seen] = m[seen, 0] + np.log(l[seen])
    return o, lse


def report(name, o, lse, ro, rlse):
    err = np.abs(o - ro).max() if o.size else 0.0
    inf_ok = np.array_equal(np.isneginf(lse), np.isneginf(rlse))
    fin = np.isfinite(rlse)
    lerr = np.abs(lse[fin] - rlse[fin]).max() if fin.any() else 0.0
    zero_ok = bool(np.all(o[np.swapaxes(np.isneginf(rlse), -1, -2)] == 0))
    ok = err < 2e-5 and lerr < 1e-4 and inf_ok and zero_ok
    print(f"{name}: {'error ok' if ok else f'BAD {err} {lerr} {inf_ok} {zero_ok}'}")


rng = np.random.default_rng(4)


def inputs(b, nq, nk):
    return (rng.standard_normal((b, nq, H, D), dtype=np.float32),
            rng.standard_normal((b, nk, HKV, D), dtype=np.float32),
            rng.standard_normal((b, nk, HKV, D), dtype=np.float32))


# Dense batches: Nq = Nk, Nq < Nk, Nq > Nk; densities from sparse (rows of
# a block far apart) to dense; bool and uint8 masks.
for nq, nk in ((200, 200), (70, 260), (260, 90)):
    for density in (0.15, 0.6):
        q, k, v = inputs(2, nq, nk)
        active = rng.random((2, nq, H)) < density
        if density > 0.5:
            active = active.astype(np.uint8) * 3
        o, lse = bundle.attention(0, q, k, v, head_active=active)
        pos = np.arange(nq) + nk - nq
        worst = []
        for b in range(2):
            ro, rl = reference(q[b], k[b], v[b], active[b], pos)
            worst.append((ro, rl))
        ro = np.stack([w[0] for w in worst])
        rl = np.stack([w[1] for w in worst])
        report(f"dense nq {nq} nk {nk} density {density}", o, lse, ro, rl)

# Every pair active: the plain call's bits.
q, k, v = inputs(2, 150, 150)
o1, l1 = bundle.attention(0, q, k, v)
o2, l2 = bundle.attention(0, q, k, v, head_active=np.ones((2, 150, H), bool))
print("all active equals plain:", np.array_equal(o1, o2) and
      np.array_equal(l1, l2))

# Packed sequences with positions (chunked prefill) and a head range.
lens_q, lens_k, q0 = [50, 0, 130], [90, 10, 200], [40, 10, 70]
T = sum(lens_q)
q = rng.standard_normal((1, T, H, D), dtype=np.float32)
k = rng.standard_normal((1, sum(lens_k), HKV, D), dtype=np.float32)
v = rng.standard_normal((1, sum(lens_k), HKV, D), dtype=np.float32)
cu_q = np.array([0, 50, 50, 180], np.int32)
cu_k = np.array([0, 90, 100, 300], np.int32)
q_start = np.array(q0, np.int64)
active = rng.random((T, H)) < 0.3
out = np.zeros_like(q)
lse = np.zeros((H, T), np.float32)
bundle.attention_run(0, q, k, v, out, lse=lse, num_seqs=3, cu_seqlens_q=cu_q,
                     cu_seqlens_k=cu_k, q_start=q_start, head_active=active)
ro = np.zeros((T, H, D))
rl = np.full((H, T), -np.inf)
for s in range(3):
    a, b_ = cu_q[s], cu_q[s + 1]
    ka, kb = cu_k[s], cu_k[s + 1]
    o_s, l_s = reference(q[0, a:b_], k[0, ka:kb], v[0, ka:kb], active[a:b_],
                         np.arange(b_ - a) + q0[s])
    ro[a:b_], rl[:, a:b_] = o_s, l_s
report("packed with positions", out[0], lse, ro, rl)

h0, n = 1, 3  # heads 1-3 read kv heads 0-1
q, k, v = inputs(2, 120, 120)
active = rng.random((2, 120, n)) < 0.5
out = np.zeros((2, 120, n, D), np.float32)
lse = np.zeros((2, n, 120), np.float32)
kr, vr = k[:, :, 0:2].copy(), v[:, :, 0:2].copy()
bundle.attention_run(0, q[:, :, h0:h0 + n].copy(), kr, vr, out, lse=lse,
                     head_start=h0, head_count=n, head_active=active)
full = np.ones((2, 120, H), bool)
full[:, :, h0:h0 + n] = active
refs = [reference(q[b], k[b], v[b], full[b], np.arange(120)) for b in range(2)]
report("head range [1, 4)", out,
       lse, np.stack([r[0][:, h0:h0 + n] for r in refs]),
       np.stack([r[1][h0:h0 + n] for r in refs]))

# Bad input.
q, k, v = inputs(1, 40, 40)
for name, bad in (("wrong shape", np.ones((1, 40, 5), bool)),
                  ("wrong dtype", np.ones((1, 40, H), np.int32)),
                  ("not contiguous", np.ones((1, 40, 2 * H), bool)[:, :, ::2])):
    try:
        bundle.attention(0, q, k, v, head_active=bad)
        print(f"{name}: accepted")
    except ValueError as e:
        print(f"{name}: ValueError: {e}")
# The library's own check: a description whose size disagrees.
d = tessera._AttentionDescV9()
tessera._lib.tessera_attention_desc_init_size(tessera.ctypes.byref(d),
                                              tessera.ctypes.sizeof(d))
o = np.zeros_like(q)
d.q, d.k, d.v = (tessera._describe(x, tessera._CPU, n)
                 for x, n in ((q, "q"), (k, "k"), (v, "v")))
d.o = tessera._describe(o, tessera._CPU, "o", output=True)
mask = np.ones((1, 40, H), np.uint8)
d.head_active = mask.ctypes.data
d.head_active_size = mask.size - 1
status = tessera._lib.tessera_attention_run(bundle._h, tessera.ctypes.byref(d))
print("wrong size:", tessera._lib.tessera_status_string(status).decode(),
      tessera._lib.tessera_last_error().decode())
d.head_active = None
d.head_active_size = mask.size
status = tessera._lib.tessera_attention_run(bundle._h, tessera.ctypes.byref(d))
print("null:", tessera._lib.tessera_status_string(status).decode(),
      tessera._lib.tessera_last_error().decode())
