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
# Packed, length and head-range backward calls run on CUDA
# (SeqBackwardFakeDriverTest); positioned ones are refused by name.
refused("positioned backward on CUDA", lambda: cuda.attention_backward(
    0, q, k, k, out, lse, out, k_start=DevArray(np.array([3], np.int64)),
    dq=out, dk=k, dv=k))
refused("host cu_seqlens on CUDA", lambda: cuda.attention_run(
    0, q, k, k, out, num_seqs=1, cu_seqlens_q=np.array([0, 64], np.int32),
    cu_seqlens_k=np.array([0, 64], np.int32)))
refused("int64 cu_seqlens", lambda: cuda.attention_run(
    0, q, k, k, out, num_seqs=1,
    cu_seqlens_q=DevArray(np.array([0, 64], np.int64)),
    cu_seqlens_k=DevArray(np.array([0, 64], np.int64))))
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

# A packed batch on CUDA (tessera_attention_run: cu_seqlens device memory)
# against each sequence's float64 attention and the CPU context's packed
# call; 40 and 70 queries on 90 and 70 keys.
lq, lk = (40, 70), (90, 70)
cq = np.concatenate([[0], np.cumsum(lq)]).astype(np.int32)
ck = np.concatenate([[0], np.cumsum(lk)]).astype(np.int32)
pq = rng.standard_normal((1, cq[-1], H, D)).astype(np.float16)
pk = rng.standard_normal((1, ck[-1], HKV, D)).astype(np.float16)
pv = rng.standard_normal((1, ck[-1], HKV, D)).astype(np.float16)
po = DevArray(np.zeros_like(pq))
plse = DevArray(np.zeros((H, cq[-1]), np.float32))
cuda.attention_run(0, DevArray(pq), DevArray(pk), DevArray(pv), po,
                   lse=plse, num_seqs=2, cu_seqlens_q=DevArray(cq),
                   cu_seqlens_k=DevArray(ck))
ho, hl = np.zeros_like(pq), np.zeros((H, cq[-1]), np.float32)
cpu.attention_run(0, pq.copy(), pk.copy(), pv.copy(), ho, lse=hl,
                  num_seqs=2, cu_seqlens_q=cq.copy(), cu_seqlens_k=ck.copy())
err, lerr = 0.0, 0.0
for i in range(2):
    zero = np.zeros((1, lq[i], H, D), np.float16)
    o64, l64, *_ = reference(pq[:, cq[i]:cq[i + 1]], pk[:, ck[i]:ck[i + 1]],
                             pv[:, ck[i]:ck[i + 1]], zero,
                             np.zeros((1, H, lq[i])))
    err = max(err, rel(po.array[:, cq[i]:cq[i + 1]], o64))
    lerr = max(lerr, rel(plse.array[:, cq[i]:cq[i + 1]], l64[0]))
print(f"packed on CUDA: o {'ok' if err < 4e-3 else 'BAD'}, lse "
      f"{'ok' if lerr < 1e-4 else 'BAD'}, same as the CPU context "
      f"{'ok' if rel(po.array, ho) < 4e-3 and rel(plse.array, hl) < 1e-4 else 'BAD'}")

# A caller's block index on CUDA (host memory, uploaded by the library):
# layer 1 of dynamic-block-index.mlir (f16, head_dim 128, 2 heads on one kv
# head: causal within the lists, the lists alone; block_q 128, block_k
# 192), Nq = 200 < Nk = 420, against float64 and the CPU context.
fake.fakecuda_use_bundle(b"dynamic-block-index")
bi_cuda = tessera.Context("cuda").load(sys.argv[2])
bi_cpu = tessera.Context("cpu").load(sys.argv[2])
nq, nk, BQ, BK, D2 = 200, 420, 128, 192, 128
first = (nk - nq) // BQ
rows = (nk - 1) // BQ - first + 1
kblocks = -(-nk // BK)
offsets = np.zeros((1, 2, rows + 1), np.int32)
cols = []
for h in range(2):
    offsets[0, h, 0] = len(cols)
    for r in range(rows):
        pick = sorted(rng.choice(kblocks, size=int(rng.integers(0, kblocks + 1)),
                                 replace=False))
        if h == 0 and r == 0:
            pick = []  # an empty row: no keys, LSE -inf
        cols += pick
        offsets[0, h, r + 1] = len(cols)
cols = np.array(cols, np.int32)
bq = rng.standard_normal((1, nq, 2, D2)).astype(np.float16)
bk = rng.standard_normal((1, nk, 1, D2)).astype(np.float16)
bv = rng.standard_normal((1, nk, 1, D2)).astype(np.float16)
bo = DevArray(np.zeros_like(bq))
blse = DevArray(np.zeros((1, 2, nq), np.float32))
ret = bi_cuda.attention(1, DevArray(bq), DevArray(bk), DevArray(bv), out=bo,
                        lse=blse, block_index=(offsets, cols))
assert ret[0] is bo and ret[1] is blse
ho, hl = bi_cpu.attention(1, bq.copy(), bk.copy(), bv.copy(),
                          block_index=(offsets.copy(), cols.copy()))
p = np.arange(nq)[:, None] + (nk - nq)
key = np.arange(nk)[None, :]
o64, l64 = np.zeros(bq.shape), np.full((2, nq), -np.inf)
for h in range(2):
    listed = np.zeros((nq, nk), bool)
    for i in range(nq):
        r = p[i, 0] // BQ - first
        for c in cols[offsets[0, h, r]:offsets[0, h, r + 1]]:
            listed[i, c * BK:(c + 1) * BK] = True
    mask = listed & ((key <= p) if h == 0 else True)
    s2 = np.where(mask, bq[0, :, h].astype(np.float64) @
                  bk[0, :, 0].astype(np.float64).T / np.sqrt(D2), -np.inf)
    m = s2.max(axis=1, keepdims=True)
    seen = np.isfinite(m[:, 0])
    e = np.where(mask, np.exp(s2 - np.where(seen[:, None], m, 0)), 0)
    l = e.sum(axis=1)
    o64[0, seen, h] = (e[seen] / l[seen, None]) @ bv[0, :, 0].astype(np.float64)
    l64[h, seen] = m[seen, 0] + np.log(l[seen])
print(f"block index on CUDA: o {'ok' if rel(bo.array, o64) < 4e-3 else 'BAD'}, "
      f"lse {'ok' if rel(blse.array[0], l64) < 1e-4 else 'BAD'}, empty rows "
      f"{int((~np.isfinite(l64)).sum())}, same as the CPU context "
      f"{'ok' if rel(bo.array, ho) < 4e-3 and rel(blse.array, hl) < 1e-4 else 'BAD'}")
refused("block index in device memory", lambda: bi_cuda.attention(
    1, DevArray(bq), DevArray(bk), DevArray(bv), out=bo, lse=False,
    block_index=(DevArray(offsets.copy()).array,
                 DevArray(cols.copy()).array)))

# Hostile interfaces: each refused by name, none crashes.
for what, bad in (("a list interface", []),
                  ("string strides", {"strides": ("a", "b", "c", "d")}),
                  ("negative extent", {"shape": (1, -64, H, D)}),
                  ("data not a pair", {"data": 5}),
                  ("strides of another rank", {"strides": (2, 2)})):
    x = DevArray(np.zeros((1, 64, H, D), np.float16))
    if isinstance(bad, dict):
        x.iface.update(bad)
    else:
        x.iface = bad
    refused(what, lambda: cuda.attention(0, x, k, k, out=out, lse=False))

# The block index's backward on CUDA (the forward's lists, host memory)
# against the CPU context's backward over the same lists.
bdo = rng.standard_normal(bq.shape).astype(np.float16)
grads = [DevArray(np.full(x.shape, np.nan, np.float16)) for x in (bq, bk, bk)]
bi_cuda.attention_backward(1, DevArray(bq), DevArray(bk), DevArray(bv), bo,
                           blse, DevArray(bdo), dq=grads[0], dk=grads[1],
                           dv=grads[2], block_index=(offsets, cols))
want = bi_cpu.attention_backward(1, bq.copy(), bk.copy(), bv.copy(), ho, hl,
                                 bdo.copy(), block_index=(offsets.copy(),
                                                          cols.copy()))
errs = [rel(g.array, w) for g, w in zip(grads, want)]
print(f"block index backward on CUDA: same as the CPU context "
      f"{'ok' if max(errs) < 1e-2 else 'BAD ' + str(errs)}")
