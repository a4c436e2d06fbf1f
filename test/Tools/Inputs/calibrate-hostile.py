"""Writes the hostile samples of calibrate-errors.test into a directory:
each is refused by attn-calibrate accuracy with a one-line error.

  calibrate-hostile.py DIR
"""
import io
import json
import os
import sys
import zipfile

import numpy as np

out = sys.argv[1]
rng = np.random.default_rng(0)
z = rng.standard_normal((64, 2, 64)).astype(np.float32)


def save(name, **arrays):
    np.savez(os.path.join(out, name), **arrays)


def header_only(name, shape, extra=64):
    """An .npz whose q0, k0, v0 declare `shape` but hold `extra` bytes."""
    with zipfile.ZipFile(os.path.join(out, name), "w") as zf:
        for x in ("q0", "k0", "v0"):
            b = io.BytesIO()
            np.lib.format.write_array_header_1_0(
                b, {"descr": "<f4", "fortran_order": False, "shape": shape})
            zf.writestr(x + ".npy", b.getvalue() + b"\0" * extra)


save("ok.npz", q0=z, k0=z, v0=z)
save("kv0.npz", q0=z, k0=z[:, :0], v0=z[:, :0])
save("n0.npz", q0=z[:0], k0=z[:0], v0=z[:0])
save("nk.npz", q0=z[:32], k0=z, v0=z)
save("d48.npz", q0=z[..., :48], k0=z[..., :48], v0=z[..., :48])
save("meta-list.npz", q0=z, k0=z, v0=z, meta=np.array(json.dumps([1, 2])))
save("meta-deep.npz", q0=z, k0=z, v0=z,
     meta=np.array("[" * 100000 + "]" * 100000))
save("meta-causal.npz", q0=z, k0=z, v0=z,
     meta=np.array(json.dumps({"causal": "yes"})))
save("meta-frame.npz", q0=z, k0=z, v0=z,
     meta=np.array(json.dumps({"frame": "x"})))
save("meta-array.npz", q0=z, k0=z, v0=z, meta=np.zeros(3))
header_only("huge-shape.npz", (1 << 20, 4096, 128))
header_only("short.npz", (1 << 16, 64, 64))
with zipfile.ZipFile(os.path.join(out, "garbage.npz"), "w") as zf:
    for x in ("q0", "k0", "v0"):
        zf.writestr(x + ".npy", b"garbage")
save("object.npz", q0=np.array([[[None]]], dtype=object), k0=z, v0=z)
save("complex.npz", q0=z.astype(np.complex64), k0=z, v0=z)
save("f64.npz", q0=np.full(z.shape, 1e300), k0=z, v0=z)
big = np.full(z.shape, 3e38, np.float32)
save("overflow.npz", q0=big, k0=big, v0=z)
# A layer whose reference output is zero for every head (V = 0 there).
save("zero-v.npz", q0=z, k0=z, v0=np.zeros_like(z))
with open(os.path.join(out, "many.txt"), "w") as f:
    f.writelines(f"#attn.window<before = {i}>\n" for i in range(1, 301))
with open(os.path.join(out, "binary.txt"), "wb") as f:
    f.write(b"\xff\xfe#attn.causal\n")
