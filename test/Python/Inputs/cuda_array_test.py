"""The binding's CUDA path without torch (cuda-array.test): CUDA arrays
given by __cuda_array_interface__ (here numpy memory the fake driver,
test/Unit/FakeCuda.cpp, treats as device memory; its kernels run on the
emulator), Bundle.attention and Bundle.attention_backward on a CUDA
context, against float64 attention and its gradients computed here from
docs/patterns.md's definitions, and against the CPU context; then bad
input refused by name.

Layer 0 of test/Unit/Inputs/BackwardCuda.mlir: f16, head_dim 64, 4 heads
on 2 kv heads: causal, a_shape<sink = 4, before = 40>,
multi_diagonal<stride = 32, width = 2>, skip."""
import ctypes
import os
import sys

import numpy as np

import tessera

fake = ctypes.CDLL(os.environ["TESSERA_LIBCUDA"])
fake.fakecuda_register.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
fake.fakecuda_use_bundle.argtypes = [ctypes.c_char_p]
fake.fakecuda_kernels.restype = ctypes.c_char_p
fake.fakecuda_use_bundle(b"backward-cuda")

H, HKV, D = 4, 2, 64
G = H // HKV


class DevArray:
    """numpy memory seen as a CUDA array (version 3 of the interface):
    registered as device memory with the fake driver. `array` is kept
    alive; `typestr`, `strides` and `readonly` may be overridden."""

    # Every array ever registered stays alive: the fake driver keeps its
    # ranges, and a later host allocation reusing freed memory would be
    # taken for device memory.
    alive = []

    def __init__(self, array, register=True, **override):
        self.array = array
        DevArray.alive.append(array)
        if register:
            base = array if array.base is None else array.base
            fake.fakecuda_register(base.ctypes.data, base.nbytes)
        self.iface = {"shape": array.shape, "typestr": array.dtype.str,
                      "data": (array.ctypes.data, False),
                      "strides": None if array.flags["C_CONTIGUOUS"]
                      else array.strides, "version": 3, "stream": None}
        self.iface.update(override)

    @property
    def __cuda_array_interface__(self):
        return self.iface


def allowed(h, p, k):
    """Head h's pairs (query positions p [Nq, 1], keys k [1, Nk])."""
    d = k - p
    if h == 0:
        return d <= 0
    if h == 1:
        return ((k < 4) & (d <= 0)) | ((d >= -40) & (d <= 0))
    if h == 2:
        m = np.mod(d, 32)
        return np.minimum(m, 32 - m) <= 2
    return np.zeros(np.broadcast(p, k).shape, dtype=bool)  # skipped


def reference(q, k, v, do, dlse):
    """float64 o [B, Nq, H, D], lse [B, H, Nq] and dq, dk, dv of
    loss = sum(o * do) + sum(lse * dlse)."""
    B, nq, nk = q.shape[0], q.shape[1], k.shape[1]
    scale = 1 / np.sqrt(D)
    q, k, v, do = (x.astype(np.float64) for x in (q, k, v, do))
    o = np.zeros(q.shape)
    lse = np.full((B, H, nq), -np.inf)
    dq, dk, dv = np.zeros(q.shape), np.zeros(k.shape), np.zeros(k.shape)
    p = np.arange(nq)[:, None] + (nk - nq)
    key = np.arange(nk)[None, :]
    for b in range(B):
        for h in range(H):
            mask = allowed(h, p, key)
            kh, vh = k[b, :, h // G], v[b, :, h // G]
            s = np.where(mask, scale * q[b, :, h] @ kh.T, -np.inf)
            m = s.max(axis=1, keepdims=True)
            seen = np.isfinite(m[:, 0])
            e = np.where(mask, np.exp(s - np.where(seen[:, None], m, 0)), 0)
            l = e.sum(axis=1)
            P = np.zeros_like(e)
            P[seen] = e[seen] / l[seen, None]
            o[b, :, h] = P @ vh
            lse[b, h, seen] = m[seen, 0] + np.log(l[seen])
            dP = do[b, :, h] @ vh.T
            delta = (do[b, :, h] * o[b, :, h]).sum(axis=1, keepdims=True)
            dS = P * (dP - delta + dlse[b, h][:, None])
            dq[b, :, h] = scale * dS @ kh
            dk[b, :, h // G] += scale * dS.T @ q[b, :, h]
            dv[b, :, h // G] += P.T @ do[b, :, h]
    return o, lse, dq, dk, dv


def rel(a, ref):
    """The largest error relative to the reference's largest magnitude."""
    a, ref = np.asarray(a, np.float64), np.asarray(ref, np.float64)
    fin = np.isfinite(ref)
    if not np.array_equal(fin, np.isfinite(a)):
        return np.inf
    return np.abs(a[fin] - ref[fin]).max() / max(np.abs(ref[fin]).max(), 1e-30)


bundle_dir = sys.argv[1]
cuda = tessera.Context("cuda").load(bundle_dir)
cpu = tessera.Context("cpu").load(bundle_dir)
rng = np.random.default_rng(7)

for B, nq, nk, transposed in ((2, 96, 96, False), (1, 70, 150, True),
                              (1, 130, 60, False)):
    q = rng.standard_normal((B, nq, H, D)).astype(np.float16)
    k = rng.standard_normal((B, nk, HKV, D)).astype(np.float16)
    v = rng.standard_normal((B, nk, HKV, D)).astype(np.float16)
    do = rng.standard_normal((B, nq, H, D)).astype(np.float16)
    dlse = rng.standard_normal((B, H, nq)).astype(np.float32)
    o64, lse64, dq64, dk64, dv64 = reference(q, k, v, do, dlse)
    if transposed:  # SDPA's [B, H, N, D] memory seen as [B, N, H, D]
        q = np.ascontiguousarray(q.transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    dq_, dk_, dv_ = (DevArray(x) for x in (q, k, v))
    o = DevArray(np.zeros((B, nq, H, D), np.float16))
    lse = DevArray(np.zeros((B, H, nq), np.float32))
    ro, rl = cuda.attention(0, dq_, dk_, dv_, out=o, lse=lse)
    assert ro is o and rl is lse
    # The CPU context's arrays: copies, not memory the fake driver calls
    # device memory (the CPU context refuses that by name).
    hq, hk, hv, hdo = (np.array(x, order="C") for x in (q, k, v, do))
    co, cl = cpu.attention(0, hq, hk, hv)
    print(f"B {B} nq {nq} nk {nk}{' transposed q' if transposed else ''}: "
          f"forward o {'ok' if rel(o.array, o64) < 4e-3 else 'BAD'}, "
          f"lse {'ok' if rel(lse.array, lse64) < 1e-4 else 'BAD'}, "
          f"same as the CPU context "
          f"{'ok' if rel(o.array, co) < 4e-3 and rel(lse.array, cl) < 1e-4 else 'BAD'}")
    grads = [DevArray(np.full(x.shape, np.nan, np.float16))
             for x in (q, k, k)]
    d_o = DevArray(do)
    before = len(fake.fakecuda_kernels().decode().split(","))
    got = cuda.attention_backward(0, dq_, dk_, dv_, o, lse, d_o,
                                  dlse=DevArray(dlse), dq=grads[0],
                                  dk=grads[1], dv=grads[2])
    assert all(g is w for g, w in zip(got, grads))
    launched = fake.fakecuda_kernels().decode().split(",")[before:]
    print("  backward launches:", " ".join(sorted(set(launched))))
    cq, ck, cv = cpu.attention_backward(0, hq, hk, hv, co, cl, hdo,
                                        dlse=dlse.copy())
    errs = [rel(g.array, r) for g, r in zip(grads, (dq64, dk64, dv64))]
    cerr = [rel(g.array, c) for g, c in zip(grads, (cq, ck, cv))]
    print(f"  backward dq, dk, dv "
          f"{'ok' if max(errs) < 1e-2 else 'BAD ' + str(errs)}, same as the "
          f"CPU context {'ok' if max(cerr) < 1e-2 else 'BAD ' + str(cerr)}")



def refused(what, f):
    try:
        f()
    except (tessera.TesseraError, TypeError, ValueError) as e:
        print(f"{what}: {type(e).__name__}: {e}")
    else:
        print(f"{what}: accepted")


q = DevArray(rng.standard_normal((1, 64, H, D)).astype(np.float16))
k = DevArray(rng.standard_normal((1, 64, HKV, D)).astype(np.float16))
host = np.zeros((1, 64, H, D), np.float16)
out = DevArray(np.zeros((1, 64, H, D), np.float16))
refused("host array", lambda: cuda.attention(0, host, k, k, out=out, lse=False))
refused("no out", lambda: cuda.attention(0, q, k, k))
refused("read-only out", lambda: cuda.attention(
    0, q, k, k, lse=False, out=DevArray(np.zeros((1, 64, H, D), np.float16),
                                        data=(out.array.ctypes.data, True))))
refused("float32 q", lambda: cuda.attention(
    0, DevArray(np.zeros((1, 64, H, D), np.float32)), k, k, out=out,
    lse=False))
refused("lse shape", lambda: cuda.attention(
    0, q, k, k, out=out, lse=DevArray(np.zeros((1, H, 63), np.float32))))
refused("unregistered memory", lambda: cuda.attention(
    0, DevArray(np.zeros((1, 64, H, D), np.float16), register=False), k, k,
    out=out, lse=False))
refused("malformed interface", lambda: cuda.attention(
    0, DevArray(np.zeros((1, 64, H, D), np.float16), shape=None), k, k,
    out=out, lse=False))
lse = DevArray(np.zeros((1, H, 64), np.float32))
refused("packed backward on CUDA", lambda: cuda.attention_backward(
    0, q, k, k, out, lse, out, cu_seqlens_q=np.array([0, 64], np.int32),
    dq=out, dk=k, dv=k))
refused("no dq", lambda: cuda.attention_backward(0, q, k, k, out, lse, out))
refused("stream on the CPU", lambda: cpu.attention(
    0, np.zeros((1, 64, H, D), np.float16),
    np.zeros((1, 64, HKV, D), np.float16),
    np.zeros((1, 64, HKV, D), np.float16), stream=5))

# The stream q's interface names (version 3; 2 is the per-thread default
# stream) is the call's stream when none is passed.
fake.fakecuda_last_stream.restype = ctypes.c_size_t
o2, _ = cuda.attention(0, DevArray(q.array, stream=2), k, k,
                       out=DevArray(np.zeros_like(out.array)), lse=False)
print("the interface's stream:", fake.fakecuda_last_stream())
o3, _ = cuda.attention(0, DevArray(q.array, stream=2), k, k,
                       out=DevArray(np.zeros_like(out.array)), lse=False,
                       stream=0x5eed)
print("stream= over it:", hex(fake.fakecuda_last_stream()))
o4, _ = cuda.attention(0, q, k, k, out=DevArray(np.zeros_like(out.array)),
                       lse=False)
print("none named:", fake.fakecuda_last_stream(), "same results:",
      np.array_equal(o2.array, o4.array) and np.array_equal(o3.array, o4.array))
dq2 = [DevArray(np.zeros_like(x.array)) for x in (q, k, k)]
cuda.attention_backward(0, q, k, k, o4, DevArray(np.zeros((1, H, 64),
                        np.float32)), o4, dq=dq2[0], dk=dq2[1], dv=dq2[2],
                        stream=0xbeef)
print("backward stream=:", hex(fake.fakecuda_last_stream()))
