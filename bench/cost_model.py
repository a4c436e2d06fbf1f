#!/usr/bin/python3
"""The cost model against this machine's CPU executor, and the selection end
to end (docs/PERFORMANCE.md, docs/cost-model.md).

  bench/cost_model.py [--build build] [--quick]

1. Fits this CPU's target (attn-calibrate target) on its own runs.
2. Predicts (attn-opt --attn-report target=...) and measures (the runtime
   through the Python binding, median of 3) 36 layer configurations that
   the fit did not see: 12 patterns and mixes x lengths x heads x head_dim.
   Prints each, the Spearman rank correlation and the median absolute error.
3. End to end: synthetic Q/K/V (attn-calibrate synth) -> accuracy
   calibration -> --attn-select -> bundle -> run; the selected layers'
   accuracy and time against the reference, and the selection regret: the
   measured time of the selected layer against the layer of each head's
   measured-fastest candidate that meets the recall floor.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

import numpy as np  # noqa: E402

import tessera  # noqa: E402


def progress(text):
    if os.environ.get("TESSERA_PROGRESS") == "1" or (
            sys.stderr.isatty() and os.environ.get("TESSERA_PROGRESS") != "0"):
        print(f"[cost_model] {text}", file=sys.stderr, flush=True)


def run(cmd, **kw):
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, **kw)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stdout}{r.stderr}")
    return r.stdout


def model_text(layers):
    """layers: list of (index, heads, kv_heads, head_dim, [(heads, pattern)])."""
    out = ["attn.model @bench {"]
    for index, h, hkv, d, groups in layers:
        out.append(f"  attn.layer {index} heads = {h} kv_heads = {hkv} "
                   f"head_dim = {d} dtype = f16 {{")
        for heads, p in groups:
            out.append(f"    attn.heads [{', '.join(map(str, heads))}] = {p}")
        out.append("  }")
    out.append("}")
    return "\n".join(out) + "\n"


def predict(bin_dir, path, n, target):
    text = run([f"{bin_dir}/attn-opt", path,
                f"--attn-report=q-len={n} target={target}", "-o", "/dev/null"])
    return {int(m.group(1)): float(m.group(2)) * 1e-3 for m in re.finditer(
        r"^layer (\d+): predicted ([0-9.]+) ms", text, re.M)}


def measure(bundle, layer, q, k, v, repeats=3):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        bundle.attention(layer, q, k, v, lse=False)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def spearman(a, b):
    def ranks(x):
        order = sorted(range(len(x)), key=lambda i: x[i])
        r = [0.0] * len(x)
        for pos, i in enumerate(order):
            r[i] = float(pos)
        return r
    ra, rb = ranks(a), ranks(b)
    ma, mb = statistics.mean(ra), statistics.mean(rb)
    cov = sum((x - ma) * (y - mb) for x, y in zip(ra, rb))
    return cov / (sum((x - ma) ** 2 for x in ra) *
                  sum((y - mb) ** 2 for y in rb)) ** 0.5


PATTERNS = [
    ("dense", "#attn.dense"),
    ("causal", "#attn.causal"),
    ("window 256", "#attn.window<before = 256>"),
    ("window 512+512", "#attn.window<before = 512, after = 512>"),
    ("a_shape 4/1024", "#attn.a_shape<sink = 4, before = 1024>"),
    ("multi-diagonal", "#attn.multi_diagonal<stride = 1024, width = 32>"),
    ("grid", "#attn.grid<stride = 1024, vertical_width = 64, "
             "slash_width = 64>"),
    ("vertical stripes", "#attn.union<#attn.window<before = 128>, "
                         "#attn.vertical_stripe<period = 256, width = 4>>"),
    ("strided shards", "#attn.intersect<#attn.causal, "
                       "#attn.strided_shards<shards = 4, block = 64>>"),
    ("shifted groups", "#attn.shifted_groups<size = 1024, shift = 512>"),
]


def validation(bin_dir, target, quick):
    configs = []
    lengths = [2048, 4096] if quick else [2048, 4096, 8192]
    for name, p in PATTERNS:
        for n in lengths:
            h = 4 if n == 8192 or name == "dense" else 8
            configs.append((name, n, h, 64 if n < 8192 else 128,
                            [(list(range(h)), p)]))
    # Mixed layers: heads of different density in one launch.
    for n in lengths:
        configs.append(("mix: 2 dense + 6 window 256", n, 8, 64,
                        [([0, 1], "#attn.dense"),
                         ([2, 3, 4, 5, 6, 7], "#attn.window<before = 256>")]))
        configs.append(("mix: llama-like (a_shape, window, causal, skip)", n,
                        8, 64,
                        [([0, 1, 2, 3], "#attn.a_shape<sink = 4, before = 1024>"),
                         ([4, 5], "#attn.window<before = 2048>"),
                         ([6], "#attn.causal"), ([7], "#attn.skip")]))
    rows = []
    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as work:
        for i, (name, n, h, d, groups) in enumerate(configs):
            progress(f"validation {i}/{len(configs)}: {name} at {n}")
            src = os.path.join(work, f"c{i}.mlir")
            with open(src, "w") as f:
                f.write(model_text([(0, h, h, d, groups)]))
            bdir = os.path.join(work, f"b{i}")
            run([f"{bin_dir}/attn-translate", src, "-o", bdir])
            pred = predict(bin_dir, src, n, target)[0]
            bundle = tessera.Context("cpu").load(bdir)
            q, k, v = (rng.standard_normal((1, n, h, d)).astype(np.float32)
                       for _ in range(3))
            meas = measure(bundle, 0, q, k, v)
            rows.append((name, n, h, d, pred, meas))
    return rows


def end_to_end(bin_dir, target, n, work, min_recall):
    sample = os.path.join(work, "sample.npz")
    calib = os.path.join(work, "calib.json")
    run([f"{bin_dir}/attn-calibrate", "synth", "-o", sample, "--len", str(n),
         "--layers", "2", "--heads", "8", "--kv-heads", "2", "--head-dim",
         "64"])
    progress("end to end: accuracy calibration")
    run([f"{bin_dir}/attn-calibrate", "accuracy", sample, "-o", calib])
    model = os.path.join(work, "model.mlir")
    with open(model, "w") as f:
        f.write(model_text([(i, 8, 2, 64, [(list(range(8)), "#attn.causal")])
                            for i in range(2)]))
    selected = os.path.join(work, "selected.mlir")
    remarks = subprocess.run(
        [f"{bin_dir}/attn-opt", model,
         f"--attn-select=target={target} calibration={calib} "
         f"min-recall={min_recall}", "-o", selected],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True).stdout
    run([f"{bin_dir}/attn-translate", selected, "-o",
         os.path.join(work, "selected")])
    run([f"{bin_dir}/attn-translate", model, "-o",
         os.path.join(work, "reference")])
    data = np.load(sample)
    sel = tessera.Context("cpu").load(os.path.join(work, "selected"))
    ref = tessera.Context("cpu").load(os.path.join(work, "reference"))
    cal = json.load(open(calib))
    out = {"remarks": [x for x in remarks.splitlines() if "remark" in x],
           "selected": open(selected).read(), "layers": []}
    for li in range(2):
        progress(f"end to end: layer {li}")
        q, k, v = (data[f"{x}{li}"][None] for x in "qkv")
        o_s, l_s = sel.attention(li, q, k, v)
        o_r, l_r = ref.attention(li, q, k, v)
        rows = np.isfinite(l_r[0])
        recall = np.where(rows, np.exp(np.minimum(l_s[0] - np.where(
            rows, l_r[0], 0), 0)), 0)
        err = float(np.linalg.norm(o_s - o_r) / np.linalg.norm(o_r))
        t_sel = measure(sel, li, q, k, v, 5)
        t_ref = measure(ref, li, q, k, v, 5)
        # The oracle: each head's measured-fastest feasible candidate, each
        # candidate timed alone on one head.
        layer = next(x for x in cal["layers"] if x["index"] == li)
        cands = layer["candidates"]
        single = {}
        singles_src = os.path.join(work, f"single{li}.mlir")
        with open(singles_src, "w") as f:
            f.write(model_text([(i, 1, 1, 64, [([0], c["pattern"])])
                                for i, c in enumerate(cands)]))
        sdir = os.path.join(work, f"single{li}")
        run([f"{bin_dir}/attn-translate", singles_src, "-o", sdir])
        sb = tessera.Context("cpu").load(sdir)
        q1 = np.ascontiguousarray(q[:, :, :1])
        k1 = np.ascontiguousarray(k[:, :, :1])
        v1 = np.ascontiguousarray(v[:, :, :1])
        for i, c in enumerate(cands):
            single[c["pattern"]] = measure(sb, i, q1, k1, v1, 5)
        oracle = []
        for h in range(8):
            ok = [c["pattern"] for c in cands
                  if c["recall"][h] >= min_recall]
            oracle.append(min(ok, key=lambda p: single[p]) if ok
                          else cal["reference"])
        groups = {}
        for h, p in enumerate(oracle):
            groups.setdefault(p, []).append(h)
        osrc = os.path.join(work, f"oracle{li}.mlir")
        with open(osrc, "w") as f:
            f.write(model_text([(li, 8, 2, 64, [(hs, p) for p, hs in
                                                 groups.items()])]))
        odir = os.path.join(work, f"oracle{li}")
        run([f"{bin_dir}/attn-translate", osrc, "-o", odir])
        ob = tessera.Context("cpu").load(odir)
        # Oracle and selection alternate, 5 pairs: the median ratio.
        ratios = []
        for _ in range(5):
            a = measure(sel, li, q, k, v, 1)
            b = measure(ob, li, q, k, v, 1)
            ratios.append(a / b)
        out["layers"].append({
            "layer": li, "mean_recall": float(recall[rows].mean()),
            "min_head_recall": float(min(recall[h][rows[h]].mean()
                                         for h in range(8))),
            "output_error": err, "selected_s": t_sel, "reference_s": t_ref,
            "speedup": t_ref / t_sel, "oracle": groups,
            "regret": statistics.median(ratios) - 1})
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--len", type=int, default=8192,
                    help="end-to-end sequence length")
    ap.add_argument("--min-recall", type=float, default=0.95)
    args = ap.parse_args()
    bin_dir = os.path.join(os.path.abspath(args.build), "bin")
    with tempfile.TemporaryDirectory() as work:
        target = os.path.join(work, "cpu.json")
        progress("fitting this CPU's target")
        print(run([f"{bin_dir}/attn-calibrate", "target", "-o", target]),
              end="")
        tgt = json.load(open(target))
        print(f"target: {tgt['source']}")
        rows = validation(bin_dir, target, args.quick)
        print("\n| layer | len | heads | head_dim | predicted (ms) | measured "
              "(ms) | error |")
        print("|---|---|---|---|---|---|---|")
        errs = []
        for name, n, h, d, p, m in rows:
            errs.append(abs(p / m - 1))
            print(f"| {name} | {n} | {h} | {d} | {1e3 * p:.1f} | "
                  f"{1e3 * m:.1f} | {100 * (p / m - 1):+.0f}% |")
        rho = spearman([r[4] for r in rows], [r[5] for r in rows])
        print(f"\n{len(rows)} configurations: Spearman {rho:.3f}, median "
              f"absolute error {100 * statistics.median(errs):.1f}%, "
              f"largest {100 * max(errs):.0f}%")
        e2e = end_to_end(bin_dir, target, args.len, work, args.min_recall)
        print(f"\nend to end at {args.len} tokens, min-recall "
              f"{args.min_recall}:")
        for r in e2e["remarks"]:
            print("  " + r.split("remark: ", 1)[-1])
        print(e2e["selected"])
        for l in e2e["layers"]:
            print(f"layer {l['layer']}: recall {l['mean_recall']:.4f} (worst "
                  f"head {l['min_head_recall']:.4f}), output error "
                  f"{l['output_error']:.4f}; {1e3 * l['selected_s']:.1f} ms "
                  f"vs reference {1e3 * l['reference_s']:.1f} ms "
                  f"({l['speedup']:.2f}x); regret against the measured "
                  f"oracle {100 * l['regret']:+.1f}% (oracle: "
                  f"{json.dumps(l['oracle'])})")


if __name__ == "__main__":
    main()
