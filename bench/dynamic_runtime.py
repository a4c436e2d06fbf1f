#!/usr/bin/env python3
"""Dynamic layers through the runtime (bundle, C API, Python binding) on the
CPU: layers of vertical-slash heads (MInference's budgets), block top-k (top
16 of 64-key blocks) and routing (16 clusters, 2 k-means iterations), each
intersected with causal, against the same layer as dense causal, from one
process, per call (index built every time). `--report` also prints the cost
model's prediction for the same layers (attn-opt --attn-report with a fitted
target, e.g. from `attn-calibrate target`).

  bench/dynamic_runtime.py [--len 32768] [--heads 2] [--repeats 3]

Needs build/ (attn-translate, libtessera_runtime) and numpy; prints one JSON
line. Inputs: LLM-like synthetic data (keys 0..3 and every 1000th key
attract all queries; locality through a shared slowly varying direction).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
os.environ.setdefault("TESSERA_RUNTIME_LIB",
                      os.path.join(ROOT, "build/lib/libtessera_runtime.so"))
import numpy as np  # noqa: E402
import tessera  # noqa: E402

LAYERS = [
    ("vertical_slash", "#attn.intersect<#attn.causal, #attn.vertical_slash<"
     "last_q = 64, vertical = 1000, slash = 6096, first_columns = 30, "
     "last_diagonals = 100>>"),
    ("block_topk", "#attn.intersect<#attn.causal, #attn.block_topk<"
     "block = 64, top_k = 16>>"),
    ("routing", "#attn.intersect<#attn.causal, #attn.routing<clusters = 16, "
     "kmeans_iterations = 2>>"),
    ("causal", "#attn.causal"),
]


def pattern_file(h):
    lines = ["attn.model @bench {"]
    for i, (_, p) in enumerate(LAYERS):
        lines += [f"  attn.layer {i} heads = {h} kv_heads = {h} head_dim = 128 "
                  "dtype = bf16 {", f"    attn.heads [0 to {h - 1}] = {p}", "  }"]
    return "\n".join(lines + ["}"]) + "\n"



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--len", type=int, default=32768)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--report", metavar="TARGET",
                    help="also print --attn-report's prediction on TARGET")
    a = ap.parse_args()
    n, h, d = a.len, a.heads, 128
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "bench.mlir")
        with open(src, "w") as f:
            f.write(pattern_file(h))
        subprocess.run([os.path.join(ROOT, "build/bin/attn-translate"), src,
                        "-o", os.path.join(tmp, "b")], check=True)
        if a.report:
            subprocess.run([os.path.join(ROOT, "build/bin/attn-opt"), src,
                            f"--attn-report=q-len={n} target={a.report}",
                            "-o", "/dev/null"], check=True)
        b = tessera.Context("cpu").load(os.path.join(tmp, "b"))
        rng = np.random.default_rng(0)
        drift = np.cumsum(rng.standard_normal((n, d)) * 0.05, 0)
        q = (rng.standard_normal((1, n, h, d)) + drift[None, :, None]).astype(np.float32)
        k = (rng.standard_normal((1, n, h, d)) + drift[None, :, None]).astype(np.float32)
        k[0, :4] += 2.0
        k[0, ::1000] += 1.5
        v = rng.standard_normal((1, n, h, d)).astype(np.float32)
        times = {}
        for layer, (name, _) in enumerate(LAYERS):
            runs = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                b.attention(layer, q, k, v)
                runs.append(time.perf_counter() - t0)
            times[name] = statistics.median(runs)
    out = {"len": n, "heads": h, "repeats": a.repeats}
    for name, _ in LAYERS:
        out[name + "_s"] = round(times[name], 3)
        out[name + "_speedup"] = round(times["causal"] / times[name], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
