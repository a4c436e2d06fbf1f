"""Caller-provided block indices (block-index.test): the runtime on the CPU
against float64 attention whose mask is written here from the definitions
in docs/patterns.md, pair by pair: row q (position p = q + Nk - Nq) may see
key k when floor(k / BK) is listed in the row of query block floor(p / BQ),
combined with each head's static part. Then bad indices, each refused with
the field, the batch entry and the head named."""
import sys

import numpy as np

import tessera

bundle_dir = sys.argv[1]
ctx = tessera.Context("cpu")
bundle = ctx.load(bundle_dir)
rng = np.random.default_rng(23)


def query_blocks(bq, nq, nk):
    """R and the position block of row 0 (floor division, also below 0)."""
    first = (nk - nq) // bq
    return (nk - 1) // bq - first + 1, first


def random_index(batch, heads, rows, key_blocks, density=0.4):
    """Random sorted lists, empty rows included: (offsets, cols)."""
    offsets = np.zeros((batch, heads, rows + 1), np.int32)
    cols = []
    for b in range(batch):
        for h in range(heads):
            offsets[b, h, 0] = len(cols)
            for i in range(rows):
                keep = np.flatnonzero(rng.random(key_blocks) < density)
                cols.extend(int(x) for x in keep)
                offsets[b, h, i + 1] = len(cols)
    return offsets, np.array(cols, np.int32)


STATIC = {  # layer 0's heads: (how the leaf joins, the static part)
    0: ("alone", None), 5: ("alone", None),
    1: ("and", lambda p, k: k <= p),
    2: ("or", lambda p, k: p - 5 <= k <= p),
    3: ("minus", lambda p, k: k < 3 and k <= p),
    4: ("static", lambda p, k: k <= p),
}


def allowed(listed, join, part, p, k):
    if join == "alone":
        return listed
    if join == "and":
        return listed and part(p, k)
    if join == "or":
        return listed or part(p, k)
    if join == "minus":
        return listed and not part(p, k)
    return part(p, k)


def reference(q, k, v, scale, mask):
    """float64 attention of one head: rows without keys give 0, -inf."""
    s = (q.astype(np.float64) @ k.astype(np.float64).T) * scale
    s = np.where(mask, s, -np.inf)
    m = s.max(axis=1, keepdims=True)
    empty = ~mask.any(axis=1)
    m[empty] = 0
    w = np.exp(s - m)
    z = w.sum(axis=1, keepdims=True)
    o = (w @ v.astype(np.float64)) / np.where(z > 0, z, 1)
    lse = np.where(empty, -np.inf, np.log(np.where(z > 0, z, 1))[:, 0] + m[:, 0])
    return o, lse


def mask_of(offsets, cols, b, slot, bq, bk, nq, nk, join, part):
    rows, first = query_blocks(bq, nq, nk)
    mask = np.zeros((nq, nk), bool)
    for qi in range(nq):
        p = qi + nk - nq
        r = p // bq - first
        lo, hi = offsets[b, slot, r], offsets[b, slot, r + 1]
        listed = set(int(x) for x in cols[lo:hi])
        for kk in range(nk):
            mask[qi, kk] = allowed(kk // bk in listed, join, part, p, kk)
    return mask


def strided(batch, n, heads, d):
    """A [batch, n, heads, d] float32 view with padded heads and rows."""
    base = rng.uniform(-1, 1, (batch, n + 1, heads, d + 8)).astype(np.float32)
    return base[:, 1:, :, 4:4 + d]


def check(layer, heads, kv_heads, bq, bk, nq, nk, batch, static,
          head_start=0, head_count=0):
    d, scale = 64, 0.125
    count = head_count or heads
    q = strided(batch, nq, count, d)
    kv0 = head_start // (heads // kv_heads)
    kv1 = (head_start + count - 1) // (heads // kv_heads) + 1
    k = strided(batch, nk, kv1 - kv0, d)
    v = strided(batch, nk, kv1 - kv0, d)
    rows, _ = query_blocks(bq, nq, nk)
    key_blocks = -(-nk // bk)
    offsets, cols = random_index(batch, count, rows, key_blocks)
    out = np.zeros((batch, nq, count, d), np.float32)
    lse = np.zeros((batch, count, nq), np.float32)
    bundle.attention_run(layer, q, k, v, out, lse=lse, scale=scale,
                         head_start=head_start, head_count=head_count,
                         block_index=(offsets, cols))
    worst, pairs = 0.0, 0
    for b in range(batch):
        for slot in range(count):
            h = head_start + slot
            join, part = static[h]
            mask = mask_of(offsets, cols, b, slot, bq, bk, nq, nk, join, part)
            pairs += int(mask.sum())
            kvh = h // (heads // kv_heads) - kv0
            ro, rl = reference(q[b, :, slot], k[b, :, kvh], v[b, :, kvh],
                               scale, mask)
            worst = max(worst, float(np.abs(ro - out[b, :, slot]).max()))
            finite = np.isfinite(rl)
            assert (np.isfinite(lse[b, slot]) == finite).all(), (layer, h)
            if finite.any():
                worst = max(worst, float(np.abs(rl[finite] -
                                                lse[b, slot][finite]).max()))
    print(f"layer {layer} nq {nq} nk {nk} heads [{head_start}, "
          f"{head_start + count}): {pairs} pairs, error "
          f"{'ok' if worst < 1e-4 else worst}")


for nq, nk in ((200, 200), (130, 300), (300, 130), (64, 64)):
    check(0, 6, 3, 64, 64, nq, nk, 2, STATIC)
check(0, 6, 3, 64, 64, 150, 260, 2, STATIC, head_start=2, head_count=3)
causal = ("and", lambda p, k: k <= p)
for nq, nk in ((260, 260), (100, 300), (300, 100)):
    check(1, 2, 1, 128, 64, nq, nk, 1, {0: causal, 1: causal})


def packed(layer=0, heads=6, kv=3):
    """Packed queries and keys of three sequences (one without queries)
    against each sequence as a dense call with its own rows of the index:
    the offsets are [num_seqs, heads, stride + 1], stride the largest R."""
    nqs, nks = (70, 0, 130), (70, 5, 260)
    cq = np.concatenate([[0], np.cumsum(nqs)]).astype(np.int32)
    ck = np.concatenate([[0], np.cumsum(nks)]).astype(np.int32)
    shapes = [query_blocks(64, nq, nk)[0] if nq else 0
              for nq, nk in zip(nqs, nks)]
    stride = max(shapes)
    offsets = np.zeros((3, heads, stride + 1), np.int32)
    cols = []
    for s, (rows, nk) in enumerate(zip(shapes, nks)):
        part = random_index(1, heads, rows, -(-nk // 64))
        offsets[s, :, :rows + 1] = part[0][0] + len(cols)
        offsets[s, :, rows + 1:] = len(cols) + len(part[1])  # unread
        cols.extend(part[1].tolist())
    cols = np.array(cols, np.int32)
    q = strided(1, int(cq[-1]), heads, 64)
    k = strided(1, int(ck[-1]), kv, 64)
    v = strided(1, int(ck[-1]), kv, 64)
    out = np.zeros((1, int(cq[-1]), heads, 64), np.float32)
    lse = np.zeros((heads, int(cq[-1])), np.float32)
    bundle.attention_run(layer, q, k, v, out, lse=lse, num_seqs=3,
                         cu_seqlens_q=cq, cu_seqlens_k=ck,
                         block_index=(offsets, cols))
    same = True
    for s in (0, 2):
        rows = shapes[s]
        o1 = np.zeros((1, nqs[s], heads, 64), np.float32)
        l1 = np.zeros((1, heads, nqs[s]), np.float32)
        sub = np.ascontiguousarray(offsets[s:s + 1, :, :rows + 1])
        bundle.attention_run(layer, q[:, cq[s]:cq[s + 1]],
                             k[:, ck[s]:ck[s + 1]], v[:, ck[s]:ck[s + 1]],
                             o1, lse=l1, block_index=(sub, cols))
        same &= np.array_equal(o1[0], out[0, cq[s]:cq[s + 1]])
        same &= np.array_equal(l1[0], lse[:, cq[s]:cq[s + 1]])
    print(f"packed equals per-sequence dense calls: {same}")


packed()


def refused(what, layer, offsets, cols, nq=200, nk=200, heads=6, kv=3,
            rows=None, **kw):
    q = np.zeros((1, nq, heads, 64), np.float32)
    k = np.zeros((1, nk, kv, 64), np.float32)
    out = np.zeros_like(q)
    index = None if offsets is None else (offsets, cols)
    try:
        bundle.attention_run(layer, q, k, k, out, block_index=index, **kw)
        print(f"{what}: accepted")
    except tessera.TesseraError as e:
        print(f"{what}: {e}")
    except ValueError as e:
        print(f"{what}: ValueError: {e}")


def good(heads=6, rows=4, key_blocks=4):
    """Every row lists key blocks 0 and 2."""
    offsets = np.zeros((1, heads, rows + 1), np.int32)
    offsets[0] = (np.arange(heads)[:, None] * rows + np.arange(rows + 1)) * 2
    cols = np.tile(np.array([0, 2], np.int32), heads * rows)
    return offsets, cols


refused("good", 0, *good())
o, c = good(); c[5 * 8 + 2 * 2 + 1] = 0            # head 5, row 2: 0, 0
refused("repeated", 0, o, c)
o, c = good(); c[1 * 8 + 1 * 2:1 * 8 + 1 * 2 + 2] = [2, 1]   # head 1, row 1
refused("unsorted", 0, o, c)
o, c = good(); c[3 * 8 + 3 * 2 + 1] = 4            # head 3, row 3: block 4
refused("out of range", 0, o, c)
o, c = good(); c[2 * 8] = -1                       # head 2, row 0
refused("negative", 0, o, c)
o, c = good(); o[0, 5, 2] = o[0, 5, 3] + 1         # head 5: row 2 decreases
refused("decreasing offsets", 0, o, c)
o, c = good(); o[0, 0, 4] = c.shape[0] + 1         # head 0 ends past cols
refused("offsets past nnz", 0, o, c)
o, c = good(); o[0, 4, 1] = 99                     # head 4 is static: unread
refused("static head's row unread", 0, o, c)
refused("missing", 0, None, None)
refused("wrong rows", 0, *good(rows=3))
refused("wrong shape", 0, *good(heads=5))
refused("packed, R too small", 0, np.zeros((2, 6, 3), np.int32),
        np.zeros(0, np.int32), num_seqs=2,
        cu_seqlens_q=np.array([0, 70, 200], np.int32),
        cu_seqlens_k=np.array([0, 100, 200], np.int32))
refused("two block sizes", 2, *good(heads=2), heads=2, kv=2)
refused("head range", 0, *good(heads=2), heads=2, kv=1, head_start=4,
        head_count=2)
o, c = good(heads=2); c[1 * 8 + 2] = 3; c[1 * 8 + 3] = 3
refused("head range, bad head 5", 0, o, c, heads=2, kv=1, head_start=4,
        head_count=2)
try:
    bundle.attention(0, np.zeros((1, 8, 6, 64), np.float32),
                     np.zeros((1, 8, 3, 64), np.float32),
                     np.zeros((1, 8, 3, 64), np.float32))
except tessera.TesseraError as e:
    print(f"dense call without index: {e}")
# attention(): 8 queries and keys, one query block per head listing key
# block 0; all-ones inputs score 64 / 8 = 8 on every key: o = 1, and
# lse = 8 + ln 8 for head 0's rows.
o8 = (np.arange(6)[:, None] + np.arange(2)).astype(np.int32)[None]
c8 = np.zeros(6, np.int32)
ones = np.ones((1, 8, 6, 64), np.float32)
out, lse = bundle.attention(0, ones, ones[:, :, :3], ones[:, :, :3].copy(),
                            block_index=(o8, c8))
print(f"attention() with block_index: o {out[0, :, 0, 0].min()} "
      f"{out[0, :, 0, 0].max()} lse {lse[0, 0, 0]:.3f}")

# A description of API 6's size (a caller built against an older header,
# through the library's tessera_attention_desc_init symbol) has no block
# index: the layer's block_index heads are refused by name.
import ctypes  # noqa: E402

d = tessera._AttentionDesc()
tessera._lib.tessera_attention_desc_init(ctypes.byref(d))
q8 = np.ones((1, 8, 6, 64), np.float32)
k8 = np.ones((1, 8, 3, 64), np.float32)
o8 = np.zeros_like(q8)
d.q, d.k, d.v = (tessera._describe(x, 0, n) for x, n in
                 ((q8, "q"), (k8, "k"), (k8, "v")))
d.o = tessera._describe(o8, 0, "out", output=True)
status = tessera._lib.tessera_attention_run(bundle._h, ctypes.byref(d))
print("API 6 description:",
      tessera._lib.tessera_status_string(status).decode(),
      tessera._lib.tessera_last_error().decode())
