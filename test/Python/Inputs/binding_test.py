"""The Python binding on the CPU: a layer of the tiny-mix bundle on numpy
arrays against a float64 attention masked by attn-viz's reference masks; and
errors raised as TesseraError."""
import subprocess
import sys

import numpy as np
import tessera

bundles, viz, pattern = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = tessera.Context("cpu")
b = ctx.load(bundles + "/tiny-mix")
print("layers", b.layers())
info = b.layer_info(0)
print("info", info)
H, Hkv, D = info["num_heads"], info["num_kv_heads"], info["head_dim"]
nq, nk = 37, 45
rng = np.random.default_rng(0)
q = rng.standard_normal((2, nq, H, D), dtype=np.float32)
k = rng.standard_normal((2, nk, Hkv, D), dtype=np.float32)
v = rng.standard_normal((2, nk, Hkv, D), dtype=np.float32)
o, lse = b.attention(0, q, k, v)

worst = 0.0
for h in range(H):
    rows = subprocess.run([viz, pattern, "--layer", "0", "--head", str(h),
                           "--q-len", str(nq), "--k-len", str(nk)],
                          capture_output=True, text=True, check=True).stdout.split()
    mask = np.array([[c == "#" for c in r] for r in rows])
    kh = h // (H // Hkv)
    for bi in range(2):
        s = q[bi, :, h, :].astype(np.float64) @ k[bi, :, kh, :].astype(np.float64).T / np.sqrt(D)
        s = np.where(mask, s, -np.inf)
        m = s.max(axis=1, keepdims=True)
        m = np.where(np.isinf(m), 0.0, m)
        p = np.where(mask, np.exp(s - m), 0.0)
        l = p.sum(axis=1, keepdims=True)
        ref = (p @ v[bi, :, kh, :].astype(np.float64)) / np.where(l > 0, l, 1.0)
        worst = max(worst, np.abs(o[bi, :, h, :] - ref).max() / np.abs(ref).max())
        ref_lse = np.where(l[:, 0] > 0, m[:, 0] + np.log(np.where(l[:, 0] > 0, l[:, 0], 1.0)), -np.inf)
        assert np.array_equal(np.isinf(lse[bi, h]), np.isinf(ref_lse)), "LSE -inf rows differ"
        fin = ~np.isinf(ref_lse)
        assert np.abs(lse[bi, h][fin] - ref_lse[fin]).max(initial=0) < 1e-4
print("max relative error below 1e-5:", worst < 1e-5)

for bad in [lambda: b.attention(0, q.astype(np.float16), k.astype(np.float16),
                               v.astype(np.float16)),  # the layer is bf16
            lambda: b.attention(5, q, k, v),
            lambda: b.attention(0, q[:, :, :3], k, v),
            lambda: b.attention(0, q, k, v, scale=-1.0),
            lambda: ctx.load("/nonexistent")]:
    try:
        bad()
        print("no error")
    except tessera.TesseraError as e:
        print("error", e.status)
try:
    b.attention(0, q.astype(np.int32), k, v)
except TypeError as e:
    print("type error:", e)

# Bad Python-side input: clear errors, never a wrapped integer, a write into
# read-only memory or a crash.
ro = np.empty_like(q)
ro.flags.writeable = False
import os, tempfile
mm_path = os.path.join(tempfile.mkdtemp(), "o.bin")
np.zeros(q.shape, np.float32).tofile(mm_path)
mm = np.memmap(mm_path, dtype=np.float32, mode="r", shape=q.shape)
for what, bad in [
        ("layer 2**70", lambda: b.attention(2**70, q, k, v)),
        ("layer_info -2**64", lambda: b.layer_info(-2**64)),
        ("layer 1.5", lambda: b.attention(1.5, q, k, v)),
        ("empty q", lambda: b.attention(0, q[:, :0], k, v)),
        ("read-only out", lambda: b.attention(0, q, k, v, out=ro)),
        ("read-only memmap out", lambda: b.attention(0, q, k, v, out=mm)),
        ("broadcast out", lambda: b.attention(0, q, k, v,
                                             out=np.broadcast_to(q[:, :1], q.shape))),
        ("overlapping heads out", lambda: b.attention(0, q, k, v,
            out=np.lib.stride_tricks.as_strided(np.empty_like(q), q.shape,
                                                (q.strides[0], q.strides[1], 0, 4)))),
        ("NUL in path", lambda: ctx.load(bundles + "/tiny-mix\0junk")),
        ("int path", lambda: ctx.load(42))]:
    try:
        bad()
        print(what, "-> no error")
    except (TypeError, ValueError) as e:
        print(what, "->", type(e).__name__ + ":", e)
print("bytes path layers", ctx.load(os.fsencode(bundles + "/tiny-mix")).layers())
