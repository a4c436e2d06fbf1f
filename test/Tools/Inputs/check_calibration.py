"""Checks an attn-calibrate accuracy file against float64 numpy: for every
layer, candidate and head, the recall (share of the reference's softmax mass
on the keys the candidate allows), the output error ||O - O_ref|| / ||O_ref||,
the error share ||O_h - O_ref,h||^2 / ||O_ref||^2 (over the layer) and the
contribution (share of the squared output norm), with masks from
attn-viz (the reference semantics), not from Tessera's executor.

  check_calibration.py SAMPLE.npz CALIB.json ATTN_VIZ
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

sample, calib_path, viz = sys.argv[1:4]
data = np.load(sample)
calib = json.load(open(calib_path))


def mask(pattern, heads, n):
    with tempfile.NamedTemporaryFile("w", suffix=".mlir", delete=False) as f:
        f.write("attn.model @m {\n  attn.layer 0 heads = %d kv_heads = 1 "
                "head_dim = 64 dtype = f16 {\n    attn.heads [0 to %d] = %s\n"
                "  }\n}\n" % (heads, heads - 1, pattern))
    out = []
    for h in range(heads):
        text = subprocess.run([viz, f.name, "--layer", "0", "--head", str(h),
                               "--q-len", str(n)], check=True,
                              stdout=subprocess.PIPE, text=True).stdout
        out.append(np.array([[c == "#" for c in r] for r in text.split()]))
    os.unlink(f.name)
    return np.stack(out)                                     # [H, N, N]


def attend(q, k, v, m):
    """float64 masked attention; rows without keys give 0."""
    h, hkv, d = q.shape[1], k.shape[1], q.shape[2]
    rep = h // hkv
    s = np.einsum("qhd,khd->hqk", q, np.repeat(k, rep, 1)) / np.sqrt(d)
    s = np.where(m, s, -np.inf)
    mx = np.max(s, -1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0)
    p = np.exp(s - mx)
    z = p.sum(-1, keepdims=True)
    p = np.where(z > 0, p / np.where(z > 0, z, 1), 0)
    return p, np.einsum("hqk,khd->qhd", p, np.repeat(v, rep, 1))


worst = {"recall": 0.0, "error": 0.0, "contribution": 0.0, "share": 0.0}
n = calib["seq_len"]
for layer in calib["layers"]:
    li = layer["index"]
    q, k, v = (data[f"{x}{li}"].astype(np.float64) for x in "qkv")
    h = q.shape[1]
    ref_mask = mask(calib["reference"], h, n)
    p_ref, o_ref = attend(q, k, v, ref_mask)
    norms = np.array([np.linalg.norm(o_ref[:, x]) for x in range(h)])
    contribution = norms ** 2 / (norms ** 2).sum()
    worst["contribution"] = max(worst["contribution"], float(np.abs(
        contribution - np.array(layer["contribution"])).max()))
    rows = ref_mask.any(-1)
    for cand in layer["candidates"]:
        m = mask(cand["pattern"], h, n)
        kept = (p_ref * m).sum(-1)                             # [H, N]
        recall = np.array([kept[x][rows[x]].mean() for x in range(h)])
        _, o = attend(q, k, v, m)
        error = np.array([np.linalg.norm(o[:, x] - o_ref[:, x]) / norms[x]
                          for x in range(h)])
        worst["recall"] = max(worst["recall"], float(np.abs(
            recall - np.array(cand["recall"])).max()))
        worst["error"] = max(worst["error"], float(np.abs(
            error - np.array(cand["error"])).max()))
        share = np.array([np.sum((o[:, x] - o_ref[:, x]) ** 2)
                          for x in range(h)]) / (norms ** 2).sum()
        worst["share"] = max(worst["share"], float(np.abs(
            share - np.array(cand["error_share"])).max()))
ok = worst["recall"] < 1e-4 and worst["error"] < 1e-3 and \
    worst["contribution"] < 1e-4 and worst["share"] < 1e-5
print(f"largest differences: recall {worst['recall']:.1e}, error "
      f"{worst['error']:.1e}, contribution {worst['contribution']:.1e}, "
      f"error share {worst['share']:.1e}")
print("calibration matches float64: " + ("yes" if ok else "NO"))
sys.exit(0 if ok else 1)
