#!/usr/bin/env python3
"""Runs Tessera's CUDA bundles on a GPU and checks and times them.

For every bundle directory given (made by `make bundles`: bundle.cu and
manifest.json), on the current CUDA device, through the Python binding
(python/tessera, over libtessera_runtime):
  1. loads the bundle on a CUDA context: NVRTC compiles it for the device
     (cold, into a fresh cache directory), then a second load reads the
     cache (warm);
  2. for each distinct layer, runs it on random inputs (Nq != Nk) and
     compares O and LSE with a float64 attention whose mask is evaluated from
     the manifest's schedule program (an independent, vectorised reading of
     the encoding in runtime/include/tessera/kernel/Program.h);
  3. times it against torch SDPA (dense) and FlexAttention with a block mask
     built from the same mask.
Prints one table; exits 1 if a check fails.
"""

import argparse
import tempfile
import json
import math
import os
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import tessera  # noqa: E402

# Node kinds and axes of Program.h.
ALL, NONE, INTERVALS, BAND, PERIODIC, SHARDS, GROUPS, BLOCKS = range(8)
UNION, INTERSECT, DIFFERENCE = 8, 9, 10
AXIS_K, AXIS_P, AXIS_D, AXIS_NEGD = range(4)


def program_mask(nodes, data, nq, nk, head, num_heads, device):
    """The [nq, nk] bool mask of one group's program (postfix nodes)."""
    q = torch.arange(nq, device=device, dtype=torch.int64)[:, None]
    k = torch.arange(nk, device=device, dtype=torch.int64)[None, :]
    p = q + (nk - nq)
    axes = {AXIS_K: k, AXIS_P: p, AXIS_D: k - p, AXIS_NEGD: p - k}
    full = torch.ones(nq, nk, dtype=torch.bool, device=device)
    stack = []
    for kind, axis, a, b, c, begin, size in nodes:
        if kind == ALL:
            stack.append(full)
        elif kind == NONE:
            stack.append(~full)
        elif kind == INTERVALS:
            x = axes[axis]
            m = ~full
            for i in range(begin, begin + size, 2):
                m = m | ((x >= data[i]) & (x < data[i + 1]))
            stack.append(m & full)
        elif kind == BAND:
            x = axes[axis]
            stack.append(((x >= a) & (x <= b)) & full)
        elif kind == PERIODIC:
            x = axes[axis]
            stack.append((torch.remainder(x - c, a) < b) & full)
        elif kind == SHARDS:
            shard = (head + c) % b
            stack.append((torch.remainder(torch.div(k, a, rounding_mode="floor"), b) == shard) & full)
        elif kind == GROUPS:
            s = b if head >= num_heads // 2 else 0
            gp = torch.div(p - s, a, rounding_mode="floor")
            gk = torch.div(k - s, a, rounding_mode="floor")
            stack.append(gp == gk)
        elif kind == BLOCKS:
            # c listed query-block ids, their c + 1 row starts, the columns.
            rows = c
            ids = data[begin:begin + rows]
            row_start = data[begin + rows:begin + 2 * rows + 1]
            cols = data[begin + 2 * rows + 1:begin + size]
            qb = torch.div(p, a, rounding_mode="floor").expand(nq, nk)
            kb = torch.div(k, b, rounding_mode="floor").expand(nq, nk)
            m = torch.zeros(nq, nk, dtype=torch.bool, device=device)
            for r in range(rows):
                for j in range(row_start[r], row_start[r + 1]):
                    m |= (qb == ids[r]) & (kb == cols[j])
            stack.append(m)
        else:
            args = stack[-axis:]
            del stack[-axis:]
            if kind == UNION:
                m = args[0]
                for x in args[1:]:
                    m = m | x
            elif kind == INTERSECT:
                m = args[0]
                for x in args[1:]:
                    m = m & x
            else:
                m = args[0] & ~args[1]
            stack.append(m)
    assert len(stack) == 1
    return stack[0]


def layer_masks(layer, nq, nk, device):
    """[heads, nq, nk] bool masks of a manifest layer (skipped heads: none)."""
    prog = layer["program"]
    nodes, data, gb = prog["nodes"], prog["data"], prog["group_begin"]
    h = layer["num_heads"]
    masks = torch.zeros(h, nq, nk, dtype=torch.bool, device=device)
    for head, group in zip(layer["computed_heads"], layer["head_groups"]):
        masks[head] = program_mask(nodes[gb[group]:gb[group + 1]], data, nq,
                                   nk, head, h, device)
    return masks


def reference(q, k, v, masks, group):
    """float64 attention with masks [H, nq, nk]; rows with no key give 0."""
    qd = q.double().transpose(1, 2)
    kd = k.double().transpose(1, 2).repeat_interleave(group, dim=1)
    vd = v.double().transpose(1, 2).repeat_interleave(group, dim=1)
    s = qd @ kd.transpose(-1, -2) / math.sqrt(q.shape[3])
    s = s.masked_fill(~masks[None], float("-inf"))
    m = s.amax(-1, keepdim=True)
    p = torch.where(masks[None], torch.exp(s - torch.where(torch.isinf(m), torch.zeros_like(m), m)), torch.zeros_like(s))
    l = p.sum(-1, keepdim=True)
    o = (p @ vd) / torch.where(l > 0, l, torch.ones_like(l))
    lse = torch.where(l[..., 0] > 0, m[..., 0] + torch.log(l[..., 0]), torch.full_like(l[..., 0], float("-inf")))
    return o.transpose(1, 2), lse


def cuda_time(fn, repeats=10):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeats):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / repeats / 1000.0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="+")
    ap.add_argument("--check-len", type=int, default=2048)
    ap.add_argument("--time-lens", default="4096,16384")
    ap.add_argument("--no-flex", action="store_true")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.manual_seed(0)
    os.environ["TESSERA_CACHE_DIR"] = tempfile.mkdtemp(prefix="tessera-cache-")
    ctx = tessera.Context("cuda")
    rows, failures = [], 0
    for bdir in args.bundles:
        manifest = json.load(open(os.path.join(bdir, "manifest.json")))
        t = time.perf_counter()
        bundle = ctx.load(bdir)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        ctx.load(bdir)
        warm = time.perf_counter() - t
        seen = set()
        for layer in manifest["layers"]:
            if layer.get("dynamic_groups"):
                continue  # their masks depend on the input: bench/gpu_dynamic.py
            key = json.dumps([layer["groups"], layer["computed_heads"], layer["skipped_heads"]])
            if key in seen:
                continue
            seen.add(key)
            dt = torch.float16 if layer["dtype"] == "f16" else torch.bfloat16
            H, Hkv, D = layer["num_heads"], layer["num_kv_heads"], layer["head_dim"]
            group = H // Hkv
            nk, nq = args.check_len + 37, args.check_len - 5
            q = torch.randn(1, nq, H, D, device=dev, dtype=dt)
            k = torch.randn(1, nk, Hkv, D, device=dev, dtype=dt)
            v = torch.randn(1, nk, Hkv, D, device=dev, dtype=dt)
            o, lse = bundle.attention(layer["index"], q, k, v)
            torch.cuda.synchronize()
            masks = layer_masks(layer, nq, nk, dev)
            ref_o, ref_lse = reference(q, k, v, masks, group)
            err = ((o.double() - ref_o).abs().max() / ref_o.abs().max()).item()
            finite = torch.isfinite(ref_lse)
            lse_err = (lse.double()[finite] - ref_lse[finite]).abs().max().item() if finite.any() else 0.0
            lse_ok = bool(torch.equal(torch.isinf(lse.double()), ~finite))
            tol = 2e-2 if dt == torch.bfloat16 else 5e-3
            ok = err <= tol and lse_err <= 1e-2 and lse_ok and not torch.isnan(o).any().item()
            failures += not ok
            for n in [int(x) for x in args.time_lens.split(",")]:
                q = torch.randn(1, n, H, D, device=dev, dtype=dt)
                k = torch.randn(1, n, Hkv, D, device=dev, dtype=dt)
                v = torch.randn(1, n, Hkv, D, device=dev, dtype=dt)
                out = torch.empty_like(q)
                t_ours = cuda_time(lambda: bundle.attention(layer["index"], q, k, v, out=out, lse=False))
                qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
                t_sdpa = cuda_time(lambda: torch.nn.functional.scaled_dot_product_attention(
                    qt, kt, vt, enable_gqa=group > 1))
                t_flex = float("nan")
                m = layer_masks(layer, n, n, dev)
                if not args.no_flex:
                    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

                    def mask_mod(b, h, qi, kv):
                        return m[h, qi, kv]
                    bm = create_block_mask(mask_mod, 1, H, n, n, device="cuda")
                    flex = torch.compile(flex_attention)
                    t_flex = cuda_time(lambda: flex(qt, kt, vt, block_mask=bm, enable_gqa=group > 1))
                rows.append((manifest["model"], layer["index"], n, f"{err:.1e}", "ok" if ok else "FAIL",
                             f"{cold:.2f}", f"{warm * 1e3:.1f}", f"{t_ours * 1e3:.3f}",
                             f"{t_sdpa * 1e3:.3f}", f"{t_flex * 1e3:.3f}",
                             f"{t_sdpa / t_ours:.2f}", f"{t_flex / t_ours:.2f}",
                             f"{m.float().mean().item():.3f}"))
    major, minor = torch.cuda.get_device_capability()
    print(f"device: {torch.cuda.get_device_name()} (sm_{major}{minor}), torch {torch.__version__}")
    header = ("model", "layer", "len", "max rel err (Nq=len-5, Nk=len+37 at check-len)", "check",
              "cold load s", "warm load ms", "tessera ms", "sdpa dense ms", "flex ms",
              "sdpa/tessera", "flex/tessera", "mask density")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
