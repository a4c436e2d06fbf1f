"""Dynamic groups of a bundle through the C API on the CPU (the Python
binding): every head against float64 attention masked by the float64 numpy
references' index (dynamic_reference.py) composed with the static parts,
f32 inputs (the builders see exactly the reference's numbers), Nq = Nk,
Nq < Nk, Nq > Nk (Nk - Nq a multiple of block top-k's block and not); block
top-k with tau > 0 (FlexPrefill's choice, both modes in each group); then the
errors of the engine's centroids."""
import sys

import numpy as np

import dynamic_reference as ref
import tessera

bundle_dir = sys.argv[1]
ctx = tessera.Context("cpu")
b = ctx.load(bundle_dir)
info = b.layer_info(0)
print("info", info["num_dynamic_heads"], info["centroid_clusters"],
      info["num_computed_heads"])
H, HKV, D = 6, 3, 64
rng = np.random.default_rng(5)


def causal(nq, nk):
    p = np.arange(nq)[:, None] + nk - nq
    return np.arange(nk)[None, :] <= p


def window(nq, nk, before):
    p = np.arange(nq)[:, None] + nk - nq
    d = np.arange(nk)[None, :] - p
    return (d <= 0) & (d >= -before)


def block_mask(nq, nk, block, lists):
    return ref.block_topk_mask(nq, nk, block, lists)


worst = 0.0
# Nk - Nq: 0, 110, -110, and multiples of block top-k's block (64): 128
# (chunked prefill), 128 with a partial first query block, -64.
for nq, nk in ((200, 200), (150, 260), (260, 150), (64, 192), (100, 228),
               (200, 136)):
    q = rng.standard_normal((1, nq, H, D)).astype(np.float32)
    k = rng.standard_normal((1, nk, HKV, D)).astype(np.float32)
    v = rng.standard_normal((1, nk, HKV, D)).astype(np.float32)
    # Planted: keys 7 and 100 attract every query; clusters for kv head 1.
    k[0, [7, 100], 0] += 1.5
    q[0, :, 0] += 0.5
    cent = rng.standard_normal((H, 3, D)).astype(np.float32)
    o, lse = b.attention(0, q, k, v, centroids=cent)
    for h in range(H):
        qh = q[0, :, h].astype(np.float64)
        kh = k[0, :, h // 2].astype(np.float64)
        vh = v[0, :, h // 2].astype(np.float64)
        if h == 0:
            cols, diags = ref.vertical_slash_index(qh, kh, 16, 12, 20, 4, 8)
            mask = ref.vertical_slash_mask(nq, nk, cols, diags) & causal(nq, nk)
        elif h == 1:
            lists = ref.block_topk_index(qh, kh, 64, top_k=2)
            mask = block_mask(nq, nk, 64, lists) | window(nq, nk, 8)
        elif h == 2:
            qc, kc = ref.routing_index(qh, kh, 3, 0, cent[h].astype(np.float64))
            mask = ref.routing_mask(qc, kc) & causal(nq, nk)
        elif h == 3:
            qc, kc = ref.routing_index(qh, kh, 4, 2)
            mask = ref.routing_mask(qc, kc)
        elif h == 4:
            lists = ref.block_topk_index(qh, kh, 64, gamma=0.5, min_blocks=1)
            mask = causal(nq, nk) & ~block_mask(nq, nk, 64, lists)
        else:
            mask = causal(nq, nk)
        want = ref.masked_attention(qh, kh, vh, mask)
        err = np.abs(o[0, :, h] - want).max()
        empty = ~mask.any(1)
        if empty.any():
            assert np.all(o[0, empty, h] == 0), "empty rows must be 0"
            assert np.all(np.isneginf(lse[0, h, empty])), "empty rows: -inf"
        worst = max(worst, err)
        print(f"nq {nq} nk {nk} head {h}: {mask.sum()} pairs, error "
              f"{'ok' if err < 1e-4 else err}")
q0, k0, v0 = q, k, v
# Layer 1: union and intersection with windows (the program path).
for nq, nk in ((200, 200), (150, 260), (260, 150)):
    q = rng.standard_normal((1, nq, 3, D)).astype(np.float32)
    k = rng.standard_normal((1, nk, 1, D)).astype(np.float32)
    v = rng.standard_normal((1, nk, 1, D)).astype(np.float32)
    o, lse = b.attention(1, q, k, v)
    kh, vh = k[0, :, 0].astype(np.float64), v[0, :, 0].astype(np.float64)
    for h in range(3):
        qh = q[0, :, h].astype(np.float64)
        if h == 2:
            qc, kc = ref.routing_index(qh, kh, 3, 1)
            mask = ref.routing_mask(qc, kc) | window(nq, nk, 8)
        elif h == 0:
            cols, diags = ref.vertical_slash_index(qh, kh, 16, 8, 12)
            mask = ref.vertical_slash_mask(nq, nk, cols, diags) | window(nq, nk, 8)
        else:
            cols, diags = ref.vertical_slash_index(qh, kh, 16, 10, 6, 2)
            mask = ref.vertical_slash_mask(nq, nk, cols, diags) & window(nq, nk, 40)
        want = ref.masked_attention(qh, kh, vh, mask)
        err = np.abs(o[0, :, h] - want).max()
        worst = max(worst, err)
        print(f"layer 1 nq {nq} nk {nk} head {h}: {mask.sum()} pairs, error "
              f"{'ok' if err < 1e-4 else err}")
# Layer 2: block top-k with tau > 0. Per kv head, the first 64 keys share a
# direction; the even heads' queries match the key 13 positions back (a
# diagonal the pooled estimate misses: vertical-slash-like), the odd heads'
# lean to the first key block as the estimate does (query-aware).
modes = set()
for nq, nk in ((200, 200), (150, 260), (260, 150), (64, 192)):
    k = 0.5 * rng.standard_normal((1, nk, 2, D))
    lean = 1.5 * rng.standard_normal((2, D))
    k[0, :64] += lean
    q = 0.5 * rng.standard_normal((1, nq, 4, D))
    for h in range(4):
        if h % 2:
            q[0, :, h] += lean[h // 2]
            continue
        for i in range(nq):
            src = i + nk - nq - 13
            if 0 <= src < nk:
                q[0, i, h] += 3.0 * k[0, src, h // 2]
    q, k = q.astype(np.float32), k.astype(np.float32)
    v = rng.standard_normal((1, nk, 2, D)).astype(np.float32)
    o, lse = b.attention(2, q, k, v)
    for h in range(4):
        qh = q[0, :, h].astype(np.float64)
        kh = k[0, :, h // 2].astype(np.float64)
        vh = v[0, :, h // 2].astype(np.float64)
        gamma, lo, hi = (0.9, 0, 0) if h < 2 else (0.8, 1, 2)
        mode = ref.flexprefill_mode(qh, kh, 64, 0.04)
        modes.add((h // 2, mode))
        lists = ref.flexprefill_index(qh, kh, 64, gamma, 0.04, lo, hi)
        mask = block_mask(nq, nk, 64, lists)
        mask = mask & causal(nq, nk) if h < 2 else mask | window(nq, nk, 8)
        want = ref.masked_attention(qh, kh, vh, mask)
        err = np.abs(o[0, :, h] - want).max()
        worst = max(worst, err)
        print(f"layer 2 nq {nq} nk {nk} head {h} ({mode}): {mask.sum()} "
              f"pairs, error {'ok' if err < 1e-4 else err}")
print("layer 2 groups took both modes:", len(modes) == 4)
print("max error below 1e-4:", worst < 1e-4)


def error(**kw):
    try:
        b.attention(0, q0, k0, v0, **kw)
    except tessera.TesseraError as e:
        return e.status + ": " + e.message
    except ValueError as e:
        return "ValueError: " + str(e)
    return "no error"


print(error())
print(error(centroids=np.zeros((H, 4, D), np.float32)))
print(error(centroids=np.zeros((H, 3, D), np.float64)))
print(error(centroids=np.zeros((H, 3), np.float32)))
try:
    b.tile_classes(0, 64, 64)
    print("tile classes: no error")
except tessera.TesseraError as e:
    print("tile classes:", e.status + ": " + e.message)
