#!/usr/bin/env python3
"""The dynamic layers of a bundle on a GPU (docs/PERFORMANCE.md): for every
layer with dynamic head groups, the CUDA output against the CPU runtime's
(whose index builders and attention are checked against float64 numpy
references in `make check`), then times at long lengths against SDPA's
causal flash attention, with the index kernels' share of the layer's GPU
time from the profiler (kernels named tessera_vs_ / tessera_bt_ /
tessera_rt_ other than *_attend / *_rest are the index). bench/gpu_check.sh
runs it (checked at 2K, timed at 32K and 128K, within its budget).

  bench/gpu_dynamic.py [BUNDLE] [--check-len 4096]
                       [--time-lens 131072,262144,524288,1048576]
                       [--repeats R] [--budget S] [--device cuda|cpu]

BUNDLE defaults to build/bundles/minference-llm (`make bundles`). Inputs:
LLM-like synthetic bf16 data (a slowly drifting shared direction gives
locality, a few sink keys attract every query). `--device cpu` runs the same
steps on the CPU at the given lengths (a dry run of this script; the
comparison is then CPU against CPU). SDPA runs with its flash backend
forced (torch.nn.attention.sdpa_kernel; on the CPU its CPU flash kernel).
TFLOP/s: SDPA's from the causal pairs, 4 * head_dim * heads * N(N+1)/2;
Tessera's is "causal-equivalent", the same FLOPs over its time (the pairs
a dynamic layer attends depend on its input). --budget S (soft seconds,
default none): a length whose time, estimated from the last length's by
the square of the ratio, does not fit what is left is reported as skipped.
SIGTERM (bench/gpu_check.sh's hard timeout) prints the rows so far and
exits 4. Prints a table; exits 1 when a layer's outputs disagree.
"""
import argparse
import json
import os
import signal
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "python"))
import tessera  # noqa: E402

INDEX_PREFIXES = ("tessera_vs_", "tessera_bt_", "tessera_rt_")


def inputs(n, h, hkv, d, device, dtype, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    drift = torch.cumsum(torch.randn(n, d, generator=g) * 0.05, 0)
    q = torch.randn(1, n, h, d, generator=g) + drift[None, :, None]
    k = torch.randn(1, n, hkv, d, generator=g) + drift[None, :, None]
    k[0, :4] += 2.0
    v = torch.randn(1, n, hkv, d, generator=g)
    return tuple(x.to(device=device, dtype=dtype) for x in (q, k, v))


def attend(bundle, device, idx, q, k, v, cent, out=None):
    """The layer through the binding: CUDA tensors as they are, on the CPU
    numpy float32 (the binding's CPU form)."""
    if device.type == "cuda":
        return bundle.attention(idx, q, k, v, out=out, lse=out is None,
                                centroids=cent)[0]
    qn, kn, vn = (x.float().numpy() for x in (q, k, v))
    o, _ = bundle.attention(idx, qn, kn, vn, lse=False,
                            centroids=None if cent is None else cent.numpy())
    return torch.from_numpy(o)


def timed(fn, device, repeats):
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(repeats):
            fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / repeats / 1000.0
    t = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - t) / repeats


def sdpa_flash(qt, kt, vt, gqa):
    """SDPA, causal, with the flash backend forced."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        return torch.nn.functional.scaled_dot_product_attention(
            qt, kt, vt, is_causal=True, enable_gqa=gqa)


class Overrun(Exception):
    """SIGTERM from bench/gpu_check.sh's hard timeout."""


def index_share(fn):
    """The index kernels' share of the tessera kernels' CUDA time."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    index = total = 0.0
    for e in prof.key_averages():
        if not e.key.startswith("tessera_"):
            continue
        t = e.device_time_total
        total += t
        if e.key.startswith(INDEX_PREFIXES) and \
                not e.key.split("_")[2].startswith(("attend", "rest")):
            index += t
    return index / total if total else float("nan")


def check_layer(bundle, cpu, device, layer, n, cent):
    """Share of query rows whose CUDA output is within 3e-2 of the CPU
    runtime's (relative to the row's largest |O|)."""
    idx, H = layer["index"], layer["num_heads"]
    Hkv, D = layer["num_kv_heads"], layer["head_dim"]
    q, k, v = inputs(n, H, Hkv, D, device, torch.bfloat16, idx)
    o = attend(bundle, device, idx, q, k, v,
               None if cent is None else cent.to(device))
    qc, kc, vc = (x.float().cpu().numpy() for x in (q, k, v))
    oc, _ = cpu.attention(idx, qc, kc, vc, centroids=None if cent is None
                          else cent.numpy())
    ref = torch.from_numpy(oc)
    err = (o.float().cpu() - ref).abs()
    scale = ref.abs().amax(dim=-1, keepdim=True).clamp_min(1e-6)
    return ((err / scale).amax(-1) <= 3e-2).float().mean().item()


def time_layer(bundle, device, layer, n, cent, repeats):
    """(tessera s, sdpa s, index share) at Nq = Nk = n."""
    idx, H = layer["index"], layer["num_heads"]
    Hkv, D = layer["num_kv_heads"], layer["head_dim"]
    q, k, v = inputs(n, H, Hkv, D, device, torch.bfloat16, idx)
    out = torch.empty_like(q)
    c = None if cent is None else cent.to(device)
    t_ours = timed(lambda: attend(bundle, device, idx, q, k, v, c, out),
                   device, repeats)
    # SDPA's layout [B, H, N, D], contiguous; float32 on the CPU.
    dt = torch.bfloat16 if device.type == "cuda" else torch.float32
    qt, kt, vt = (x.transpose(1, 2).to(dt).contiguous() for x in (q, k, v))
    t_sdpa = timed(lambda: sdpa_flash(qt, kt, vt, H != Hkv), device, repeats)
    share = index_share(lambda: attend(bundle, device, idx, q, k, v, c, out)) \
        if device.type == "cuda" else float("nan")
    return t_ours, t_sdpa, share


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", nargs="?", default="build/bundles/minference-llm")
    ap.add_argument("--check-len", type=int, default=4096)
    ap.add_argument("--time-lens", default="131072,262144,524288,1048576")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--budget", type=float, default=float("inf"),
                    help="soft seconds (default: none)")
    args = ap.parse_args()
    t0 = time.perf_counter()

    def left():
        return args.budget - (time.perf_counter() - t0)

    def on_term(signum, frame):
        raise Overrun()
    signal.signal(signal.SIGTERM, on_term)
    device = torch.device(args.device)
    manifest = json.load(open(os.path.join(args.bundle, "manifest.json")))
    rows, failures, cut = [], 0, False
    try:
        main_ctx = tessera.Context(args.device)
        bundle = main_ctx.load(args.bundle)
        cpu = tessera.Context("cpu").load(args.bundle)
        lens = [int(x) for x in args.time_lens.split(",") if x]
        for layer in manifest["layers"]:
            if not layer.get("dynamic_groups"):
                continue
            idx, H = layer["index"], layer["num_heads"]
            D = layer["head_dim"]
            info = bundle.layer_info(idx)
            cent = None
            if info["centroid_clusters"]:
                cent = torch.randn(H, info["centroid_clusters"], D)
            families = "+".join(sorted({g["family"]
                                        for g in layer["dynamic_groups"]}))
            lead = (manifest["model"], idx, families)
            if left() <= 0:
                rows.append(lead + ("-", "-", "skipped (budget)") + ("-",) * 6)
                continue
            print(f"[gpu_dynamic] layer {idx}: check at {args.check_len}",
                  file=sys.stderr, flush=True)
            share_ok = check_layer(bundle, cpu, device, layer, args.check_len,
                                   cent)
            ok = share_ok >= 0.99
            failures += not ok
            check = (f"{share_ok:.4f}", "ok" if ok else "FAIL")
            last = None  # (length, seconds) of the last timed length
            for n in lens:
                est = 0.0 if last is None else \
                    last[1] * (n / last[0]) ** 2
                if left() <= est:
                    rows.append(lead + (n,) + check +
                                ("skipped (budget)",) + ("-",) * 5)
                    continue
                print(f"[gpu_dynamic] layer {idx}: time at {n}",
                      file=sys.stderr, flush=True)
                t = time.perf_counter()
                t_ours, t_sdpa, share = time_layer(bundle, device, layer, n,
                                                   cent, args.repeats)
                last = (n, time.perf_counter() - t)
                flops = 4 * D * H * n * (n + 1) / 2
                rows.append(lead + (n,) + check + (
                    f"{t_ours * 1e3:.2f}", f"{flops / t_ours / 1e12:.4g}",
                    f"{t_sdpa * 1e3:.2f}", f"{flops / t_sdpa / 1e12:.4g}",
                    f"{t_sdpa / t_ours:.2f}", f"{share:.3f}"))
            if not lens:
                rows.append(lead + ("-",) + check + ("-",) * 6)
    except Overrun:
        cut = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "CPU"
    print(f"device: {name}, torch {torch.__version__}, check length "
          f"{args.check_len}" + (" (CUT SHORT by the hard timeout)" if cut else ""))
    header = ("model", "layer", "dynamic families", "len",
              "rows within 3e-2 of the CPU runtime", "check", "tessera ms",
              "tessera causal-equivalent TFLOP/s", "sdpa flash causal ms",
              "sdpa TFLOP/s", "sdpa/tessera", "index share of kernel time")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    if failures:
        return 1
    return 4 if cut else 0


if __name__ == "__main__":
    sys.exit(main())
