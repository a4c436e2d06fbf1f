#!/usr/bin/env python3
"""Dynamic layers through the runtime (bundle, C API, Python binding) on the
CPU: a layer of vertical-slash heads (MInference's budgets, intersected with
causal) against the same layer as dense causal, from one process, per call
(index built every time).

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

PATTERN = """attn.model @bench {{
  attn.layer 0 heads = {h} kv_heads = {h} head_dim = 128 dtype = bf16 {{
    attn.heads [0 to {last}] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096, first_columns = 30, last_diagonals = 100>>
  }}
  attn.layer 1 heads = {h} kv_heads = {h} head_dim = 128 dtype = bf16 {{
    attn.heads [0 to {last}] = #attn.causal
  }}
}}
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--len", type=int, default=32768)
    ap.add_argument("--heads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    n, h, d = a.len, a.heads, 128
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "bench.mlir")
        with open(src, "w") as f:
            f.write(PATTERN.format(h=h, last=h - 1))
        subprocess.run([os.path.join(ROOT, "build/bin/attn-translate"), src,
                        "-o", os.path.join(tmp, "b")], check=True)
        b = tessera.Context("cpu").load(os.path.join(tmp, "b"))
        rng = np.random.default_rng(0)
        drift = np.cumsum(rng.standard_normal((n, d)) * 0.05, 0)
        q = (rng.standard_normal((1, n, h, d)) + drift[None, :, None]).astype(np.float32)
        k = (rng.standard_normal((1, n, h, d)) + drift[None, :, None]).astype(np.float32)
        k[0, :4] += 2.0
        k[0, ::1000] += 1.5
        v = rng.standard_normal((1, n, h, d)).astype(np.float32)
        times = {}
        for layer, name in ((0, "vertical_slash"), (1, "causal")):
            runs = []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                b.attention(layer, q, k, v)
                runs.append(time.perf_counter() - t0)
            times[name] = statistics.median(runs)
    print(json.dumps({"len": n, "heads": h, "repeats": a.repeats,
                      "vertical_slash_s": round(times["vertical_slash"], 3),
                      "causal_s": round(times["causal"], 3),
                      "speedup": round(times["causal"] / times["vertical_slash"], 2)}))


if __name__ == "__main__":
    main()
