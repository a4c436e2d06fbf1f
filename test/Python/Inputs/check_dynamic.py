"""Compares the CPU index builders' results (written by tessera-dynamic-dump)
with the float64 numpy references: the same selected sets, and attention
over each index (intersected with causal) against float64 masked attention.

  check_dynamic.py DUMPDIR
"""
import json
import os
import sys

import numpy as np

import dynamic_reference as ref

root = sys.argv[1]
failures = 0


def check(name, ok, detail=""):
    global failures
    print(f"{name}: {'ok' if ok else 'FAILED'}{(' ' + detail) if detail else ''}")
    failures += 0 if ok else 1


def compare_attention(name, q, k, v, mask, o, lse):
    want = ref.masked_attention(q, k, v, mask)
    rows = mask.any(1)
    s = np.where(mask, (q @ k.T) / np.sqrt(q.shape[1]), -np.inf)
    mx = s.max(1)
    with np.errstate(divide="ignore"):
        want_lse = np.where(rows, mx + np.log(np.exp(s - np.where(
            rows, mx, 0)[:, None]).sum(1)), -np.inf)
    err = float(np.abs(o - want).max())
    lse_ok = np.allclose(lse[rows], want_lse[rows], atol=1e-4) and \
        bool(np.isneginf(lse[~rows]).all())
    check(f"  {name}: attention over the index", err < 1e-4 and lse_ok,
          f"(max error {err:.1e}, {int((~rows).sum())} empty rows)")


for case in sorted(os.listdir(root)):
    d = os.path.join(root, case)
    q, k, v = (np.load(os.path.join(d, f"{x}.npy")).astype(np.float64)
               for x in "qkv")
    idx = json.load(open(os.path.join(d, "index.json")))
    nq, nk = q.shape[0], k.shape[0]
    print(f"{case}: Nq {nq}, Nk {nk}")
    causal = np.arange(nk)[None, :] <= (np.arange(nq) + nk - nq)[:, None]

    p = idx["vertical_slash"]
    cols, diags = ref.vertical_slash_index(
        q, k, p["last_q"], p["vertical"], p["slash"], p["first_columns"],
        p["last_diagonals"])
    check("  vertical_slash columns", cols == p["columns"])
    check("  vertical_slash diagonals", diags == p["diagonals"])
    vs_mask = ref.vertical_slash_mask(nq, nk, cols, diags) & causal
    compare_attention("vertical_slash", q, k, v, vs_mask,
                      np.load(os.path.join(d, "o_vertical_slash.npy")),
                      np.load(os.path.join(d, "lse_vertical_slash.npy")))
    if case == "planted":
        check("  planted columns 7 and 100 found",
              7 in cols and 100 in cols)
        check("  planted diagonal -13 found", -13 in diags)
        # From row 113 on every row sees both columns and its diagonal.
        r = ref.recall(q[113:], k, vs_mask[113:], causal[113:])
        check("  recall of the causal attention mass (rows >= 113) above "
              "0.9", r > 0.9, f"({r:.4f}; all rows "
              f"{ref.recall(q, k, vs_mask, causal):.4f})")

    g = idx["block_topk_gamma"]
    want = ref.block_topk_index(q, k, g["block"], gamma=g["gamma"],
                                min_blocks=g["min_blocks"],
                                max_blocks=g["max_blocks"])
    first, _ = ref.query_blocks(nq, nk, g["block"])
    check("  block_topk (gamma) blocks", want == g["blocks"] and
          first == g["first_block"])
    f = idx["block_topk_fixed"]
    check("  block_topk (top_k) blocks", ref.block_topk_index(
        q, k, f["block"], top_k=f["top_k"]) == f["blocks"] and
        first == f["first_block"])
    bm = ref.block_topk_mask(nq, nk, g["block"], want)
    # Every query block keeps at least min_blocks key blocks, so no row is
    # left without keys before causality (chunked prefill once emptied
    # rows here).
    check("  block_topk keeps keys for every row", bool(bm.any(1).all()))
    compare_attention("block_topk", q, k, v, bm & causal,
                      np.load(os.path.join(d, "o_block_topk.npy")),
                      np.load(os.path.join(d, "lse_block_topk.npy")))

    t = idx["block_topk_tau"]
    dist = ref.flexprefill_distance(q, k, t["block"])
    mode = "vertical_slash" if dist > t["tau"] else "query_aware"
    want = ref.flexprefill_index(q, k, t["block"], t["gamma"], t["tau"],
                                 min_blocks=t["min_blocks"])
    check(f"  block_topk (tau) distance and mode ({mode})",
          abs(dist - t["distance"]) < 1e-6 and mode == t["mode"],
          f"({t['distance']:.4f})")
    check("  block_topk (tau) blocks", want == t["blocks"])
    compare_attention("block_topk (tau)", q, k, v,
                      ref.block_topk_mask(nq, nk, t["block"], want) & causal,
                      np.load(os.path.join(d, "o_block_topk_tau.npy")),
                      np.load(os.path.join(d, "lse_block_topk_tau.npy")))

    rk = idx["routing_kmeans"]
    qc, kc = ref.routing_index(q, k, rk["clusters"], rk["iterations"])
    check("  routing (k-means) clusters", qc.tolist() == rk["queries"] and
          kc.tolist() == rk["keys"])
    rg = idx["routing_given"]
    cents = np.load(os.path.join(d, "centroids.npy")).astype(np.float64)
    gq, gk = ref.routing_index(q, k, rg["clusters"], 0, cents)
    check("  routing (given centroids) clusters",
          gq.tolist() == rg["queries"] and gk.tolist() == rg["keys"])
    compare_attention("routing", q, k, v, ref.routing_mask(qc, kc) & causal,
                      np.load(os.path.join(d, "o_routing.npy")),
                      np.load(os.path.join(d, "lse_routing.npy")))
    compare_attention("routing by segments", q, k, v,
                      ref.routing_mask(qc, kc) & causal,
                      np.load(os.path.join(d, "o_routing_segments.npy")),
                      np.load(os.path.join(d, "lse_routing_segments.npy")))

print(f"{failures} failures")
sys.exit(1 if failures else 0)
