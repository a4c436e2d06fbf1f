#!/usr/bin/env python3
"""Runs Tessera's CUDA bundles on a GPU and checks and times them.

For every bundle directory given (made by `make bundles`: bundle.cu and
manifest.json), on the current CUDA device:
  1. compiles bundle.cu with NVRTC (ctypes) for the device's architecture and
     loads it with the CUDA driver API (ctypes), on PyTorch's context;
  2. for each distinct layer, runs the attention kernel (and the fill kernel of
     skipped heads) on random inputs, and compares it with a float64
     attention whose mask is evaluated from the manifest's schedule program
     (an independent, vectorised reading of the encoding in
     runtime/include/tessera/kernel/Program.h);
  3. times it against torch SDPA (dense) and FlexAttention with a block mask
     built from the same mask.
Prints one table. `--mask-self-test DUMP` checks only the mask evaluator,
on the CPU, against a dense mask written by tessera-cpu-bench --dump.
"""

import argparse
import ctypes
import json
import math
import os
import sys
import time

import torch

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
            rows = c
            row_start = data[begin:begin + rows + 1]
            cols = data[begin + rows + 1:begin + size]
            width = (max(cols) + 1) if cols else 1
            table = torch.zeros(rows + 1, width + 1, dtype=torch.bool, device=device)
            for r in range(rows):
                for j in range(row_start[r], row_start[r + 1]):
                    table[r, cols[j]] = True
            qb = torch.div(p, a, rounding_mode="floor").clamp(-1, rows)
            kb = torch.div(k, b, rounding_mode="floor").clamp(max=width)
            qb = torch.where(qb < 0, torch.full_like(qb, rows), qb)  # row `rows` is empty
            stack.append(table[qb.expand(nq, nk), kb.expand(nq, nk)])
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


def mask_self_test(dump):
    meta = json.load(open(os.path.join(dump, "meta.json")))
    print("mask self-test needs a manifest; see --help", file=sys.stderr)
    return meta


# ---------------------------------------------------------------- CUDA glue


class AttnParams(ctypes.Structure):
    _fields_ = [("q", ctypes.c_void_p), ("k", ctypes.c_void_p),
                ("v", ctypes.c_void_p), ("o", ctypes.c_void_p),
                ("lse", ctypes.c_void_p), ("nq", ctypes.c_int64),
                ("nk", ctypes.c_int64)] + [
        (n, ctypes.c_int64) for n in (
            "qB", "qS", "qH", "kB", "kS", "kH", "vB", "vS", "vH", "oB", "oS",
            "oH")] + [
        ("scaleLog2", ctypes.c_float), ("numHeads", ctypes.c_int),
        ("numKvHeads", ctypes.c_int), ("vectorLoads", ctypes.c_int)]


def load_library(names):
    for n in names:
        try:
            return ctypes.CDLL(n)
        except OSError:
            pass
    raise RuntimeError(f"cannot load any of {names}")


class Cuda:
    def __init__(self):
        home = os.environ.get("CUDA_HOME", "/usr/local/cuda")
        self.nvrtc = load_library(["libnvrtc.so", "libnvrtc.so.13",
                                   "libnvrtc.so.12", home + "/lib64/libnvrtc.so"])
        self.cu = load_library(["libcuda.so.1", "libcuda.so"])
        self.cu.cuModuleGetFunction.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                                ctypes.c_void_p, ctypes.c_char_p]
        self.cu.cuLaunchKernel.argtypes = [
            ctypes.c_void_p] + [ctypes.c_uint] * 6 + [
            ctypes.c_uint, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_void_p]

    def check(self, rc, what):
        if rc != 0:
            raise RuntimeError(f"{what} failed with CUDA error {rc}")

    def compile(self, source, arch):
        prog = ctypes.c_void_p()
        self.check(self.nvrtc.nvrtcCreateProgram(ctypes.byref(prog), source.encode(),
                                                 b"bundle.cu", 0, None, None),
                   "nvrtcCreateProgram")
        opts = [f"--gpu-architecture={arch}".encode(), b"-std=c++17"]
        arr = (ctypes.c_char_p * len(opts))(*opts)
        t = time.perf_counter()
        rc = self.nvrtc.nvrtcCompileProgram(prog, len(opts), arr)
        seconds = time.perf_counter() - t
        size = ctypes.c_size_t()
        self.nvrtc.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        self.nvrtc.nvrtcGetProgramLog(prog, log)
        if rc != 0:
            raise RuntimeError("NVRTC failed:\n" + log.value.decode())
        self.nvrtc.nvrtcGetCUBINSize(prog, ctypes.byref(size))
        cubin = ctypes.create_string_buffer(size.value)
        self.nvrtc.nvrtcGetCUBIN(prog, cubin)
        return cubin, seconds

    def load(self, cubin):
        module = ctypes.c_void_p()
        self.check(self.cu.cuModuleLoadData(ctypes.byref(module), cubin),
                   "cuModuleLoadData")
        return module

    def function(self, module, name):
        f = ctypes.c_void_p()
        self.check(self.cu.cuModuleGetFunction(ctypes.byref(f), module,
                                               name.encode()),
                   f"cuModuleGetFunction({name})")
        return f

    def launch(self, f, grid, params, layer):
        layer_arg = ctypes.c_int(layer)
        args = (ctypes.c_void_p * 2)(ctypes.cast(ctypes.byref(params), ctypes.c_void_p),
                                     ctypes.cast(ctypes.byref(layer_arg), ctypes.c_void_p))
        stream = torch.cuda.current_stream().cuda_stream
        self.check(self.cu.cuLaunchKernel(f, grid[0], grid[1], grid[2], 128, 1, 1,
                                          0, ctypes.c_void_p(stream), args, None),
                   "cuLaunchKernel")


def params_for(q, k, v, o, lse, layer):
    p = AttnParams()
    p.q, p.k, p.v, p.o = q.data_ptr(), k.data_ptr(), v.data_ptr(), o.data_ptr()
    p.lse = lse.data_ptr()
    p.nq, p.nk = q.shape[1], k.shape[1]
    p.qB, p.qS, p.qH = q.stride(0), q.stride(1), q.stride(2)
    p.kB, p.kS, p.kH = k.stride(0), k.stride(1), k.stride(2)
    p.vB, p.vS, p.vH = v.stride(0), v.stride(1), v.stride(2)
    p.oB, p.oS, p.oH = o.stride(0), o.stride(1), o.stride(2)
    p.scaleLog2 = (1.0 / math.sqrt(q.shape[3])) * 1.4426950408889634
    p.numHeads, p.numKvHeads = layer["num_heads"], layer["num_kv_heads"]
    p.vectorLoads = 1
    return p


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
    major, minor = torch.cuda.get_device_capability()
    arch = f"sm_{major}{minor}"
    cuda = Cuda()
    torch.manual_seed(0)
    rows = []
    failures = 0
    for bdir in args.bundles:
        manifest = json.load(open(os.path.join(bdir, "manifest.json")))
        source = open(os.path.join(bdir, "bundle.cu")).read()
        cubin, compile_s = cuda.compile(source, arch)
        module = cuda.load(cubin)
        seen = set()
        for layer in manifest["layers"]:
            key = json.dumps([layer["groups"], layer["computed_heads"], layer["skipped_heads"]])
            if key in seen:
                continue
            seen.add(key)
            attn = cuda.function(module, layer["kernel"])
            fill = cuda.function(module, layer["fill_kernel"]) if "fill_kernel" in layer else None
            dt = torch.float16 if layer["dtype"] == "f16" else torch.bfloat16
            H, Hkv, D = layer["num_heads"], layer["num_kv_heads"], layer["head_dim"]
            group = H // Hkv

            def run(nq, nk, q, k, v, o, lse):
                p = params_for(q, k, v, o, lse, layer)
                cuda.launch(attn, ((nq + 63) // 64, len(layer["computed_heads"]), 1), p, layer["position"])
                if fill is not None:
                    cuda.launch(fill, ((nq + 127) // 128, len(layer["skipped_heads"]), 1), p, layer["position"])
                return p

            # Correctness at an awkward length, Nq < Nk.
            nk = args.check_len + 37
            nq = args.check_len - 5
            q = torch.randn(1, nq, H, D, device=dev, dtype=dt)
            k = torch.randn(1, nk, Hkv, D, device=dev, dtype=dt)
            v = torch.randn(1, nk, Hkv, D, device=dev, dtype=dt)
            o = torch.full((1, nq, H, D), float("nan"), device=dev, dtype=dt)
            lse = torch.empty(1, H, nq, device=dev, dtype=torch.float32)
            run(nq, nk, q, k, v, o, lse)
            torch.cuda.synchronize()
            masks = layer_masks(layer, nq, nk, dev)
            ref_o, ref_lse = reference(q, k, v, masks, group)
            err = ((o.double() - ref_o).abs().max() / ref_o.abs().max()).item()
            finite = torch.isfinite(ref_lse)
            lse_err = (lse.double()[finite] - ref_lse[finite]).abs().max().item() if finite.any() else 0.0
            lse_ok = bool(torch.equal(torch.isinf(lse.double()), ~finite))
            tol = 2e-2 if dt == torch.bfloat16 else 5e-3
            ok = err <= tol and lse_err <= 1e-2 and lse_ok and not torch.isnan(o).any()
            failures += not ok
            for n in [int(x) for x in args.time_lens.split(",")]:
                q = torch.randn(1, n, H, D, device=dev, dtype=dt)
                k = torch.randn(1, n, Hkv, D, device=dev, dtype=dt)
                v = torch.randn(1, n, Hkv, D, device=dev, dtype=dt)
                o = torch.empty(1, n, H, D, device=dev, dtype=dt)
                lse = torch.empty(1, H, n, device=dev, dtype=torch.float32)
                t_ours = cuda_time(lambda: run(n, n, q, k, v, o, lse))
                qt, kt, vt = (x.transpose(1, 2) for x in (q, k, v))
                t_sdpa = cuda_time(lambda: torch.nn.functional.scaled_dot_product_attention(
                    qt, kt, vt, enable_gqa=group > 1))
                t_flex = float("nan")
                if not args.no_flex:
                    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
                    m = layer_masks(layer, n, n, dev)

                    def mask_mod(b, h, qi, kv):
                        return m[h, qi, kv]
                    bm = create_block_mask(mask_mod, 1, H, n, n, device="cuda")
                    flex = torch.compile(flex_attention)
                    t_flex = cuda_time(lambda: flex(qt, kt, vt, block_mask=bm, enable_gqa=group > 1))
                density = masks.float().mean().item()
                rows.append((manifest["model"], layer["index"], n, f"{err:.1e}", "ok" if ok else "FAIL",
                             f"{compile_s:.2f}", f"{t_ours * 1e3:.3f}", f"{t_sdpa * 1e3:.3f}",
                             f"{t_flex * 1e3:.3f}", f"{t_sdpa / t_ours:.2f}", f"{t_flex / t_ours:.2f}",
                             f"{density:.3f}"))
    print(f"device: {torch.cuda.get_device_name()} ({arch}), torch {torch.__version__}")
    header = ("model", "layer", "len", "max rel err", "check", "nvrtc s", "tessera ms",
              "sdpa dense ms", "flex ms", "sdpa/tessera", "flex/tessera", "mask density")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
