#!/usr/bin/env python3
"""Checks Tessera's bundles on a GPU against float64 and times them against
PyTorch SDPA (flash backend), FlexAttention, FlashAttention-2 (flash_attn)
and FlashInfer. Run by bench/gpu_check.sh (docs/PERFORMANCE.md, "The GPU
check"); usable alone:

  bench/gpu_check.py BUNDLE_DIR... [--device cuda|cpu] [--budget S]
      [--check-len N] [--time-lens N,...] [--repeats R]
      [--cases auto|BUNDLE:LAYER,...] [--max-cases-per-bundle K]
      [--flex compile|eager|off] [--json FILE] [--inject-error]
  bench/gpu_check.py --write-reference DIR --translate ATTN_TRANSLATE

Phases, each with a share of --budget seconds (unused time carries over;
work left when a phase's time is out is reported as skipped, not run):
  load (20%)  every bundle, and a copy per kernel path (below), loaded on a
              fresh cache: NVRTC compiles it for the device (cold), then a
              second load reads the cache (warm);
  check (20%) every distinct static layer at Nq = N-5, Nk = N+37 and at
              Nq = N+37, Nk = N-5 (N = --check-len; more queries than keys
              gives rows with no key) against a float64 attention whose mask
              is evaluated from the manifest's program (an independent,
              vectorised reading of runtime/include/tessera/kernel/Program.h);
              O within 2e-2 (bf16) / 5e-3 (f16) / 2e-3 (f32, the CPU) of the
              largest |O|, LSE within 1e-2, -inf exactly on empty rows;
  backward (10%) every bundle's first two distinct static layers with
              backward kernels: dQ, dK, dV of the runtime (the CUDA backward
              kernels) at the check lengths against float64 autograd (with a
              gradient by the LSE), within 4e-2 (bf16) / 1e-2 (f16) / 2e-3
              (f32) of the largest |gradient|; tessera.torch's autograd
              against the binding's backward once; the headline causal
              layer's forward and forward + backward at the longest timing
              length against SDPA's flash backend and FlexAttention;
  time (50%)  the timing cases (below) at each --time-lens length, Nq = Nk,
              batch 1: Tessera per kernel path, Tessera's dense kernel of the
              same shape (the gpu-reference bundle), SDPA with the flash
              backend forced (torch.nn.attention.sdpa_kernel), FlexAttention
              with the layer's BlockMask (tessera.torch.block_mask, same
              pattern; torch.compile'd), flash_attn and FlashInfer where they
              import. SDPA, flash_attn and FlashInfer compute the pattern
              where it is dense or causal, else dense attention (said in the
              table). Each timing: warm-up, then up to R calls (fewer where
              one call is long), the median. Tessera's output at the timing
              length is checked on 64 sampled query rows against float64.

Timing cases (--cases auto): the causal d128 bf16 layer of the
gpu-reference bundle (the headline, 32 heads, 8 KV heads at 16K), its dense
layer, then from each other bundle up to K static layers with distinct
patterns or shapes. FLOPs are counted from the attended (query, key) pairs:
4 * head_dim * pairs (QK^T and PV, one multiply-add = 2 FLOPs; softmax not
counted), the pairs exactly: the full tiles' areas plus the partial tiles'
allowed pairs evaluated with the layer's program; a dense peer counts
heads * Nq * Nk. The same count for every implementation computing the same
thing, so TFLOP/s compare like for like.

Goals (reported, not the exit status): the headline causal layer at the
longest length at least 0.9x the speed of FlashAttention-2 on the mma.sync
path (flash_attn, or SDPA's flash backend, which is FlashAttention-2's
kernel, where flash_attn is absent) and of FlashAttention-3 on the sm_90a
path (flash_attn_interface, FlashAttention-3's Hopper build, or SDPA's
cuDNN backend where it is absent); each non-dense case at most (visited tile fraction + 0.05) x the
time of Tessera's dense kernel of the same shape, tiles counted at the
kernel's block_q x block_k.

Kernel paths: a bundle whose manifest's kernels carry a "path" field with
more than one value ("mma_sync", and "wgmma" where layers have sm_90a
twins) is loaded, checked and timed once per path: the runtime picks the
kernels at load time, and TESSERA_KERNEL_PATH=<path> is set while each
path's copy loads. A path whose "arch" (sm_XY, sm_XYa) the device cannot run
is reported and skipped. Visited tiles are counted at each path's block_q x
block_k. On CUDA the profiler lists the tessera_ kernels that ran for each
timed case. No field, or one value: one path, loaded as it is.

--device cpu: the same code paths on the CPU with tiny shapes (float32,
the runtime's CPU executor, SDPA's CPU flash backend, eager FlexAttention):
a dry run that make check runs (test/Python/gpu-check.test).
--inject-error perturbs one Tessera output element of the first checked
layer, and one dQ element of the first backward check: the checks must
then fail (the test of the failure path).
--write-reference DIR writes DIR/gpu-reference.mlir (a dense layer for each
distinct static shape of DIR/*/manifest.json, and the dense and causal
layers of the headline shape) and translates it into DIR/gpu-reference.

Prints the environment and the tables; exits 0 when every check passed, 1
on a wrong result, 4 when cut short by SIGTERM (the shell's hard timeout)
with no wrong result seen.
"""

import argparse
import json
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "python"))

# torch and tessera are imported in main(): --write-reference needs neither.
torch = None
tessera = None

# The headline shape (a Llama-3-8B layer): heads, kv heads, head_dim, dtype.
HEADLINE = (32, 8, 128, "bf16")
REFERENCE = "gpu-reference"

# Node kinds and axes of Program.h.
ALL, NONE, INTERVALS, BAND, PERIODIC, SHARDS, GROUPS, BLOCKS = range(8)
UNION, INTERSECT, DIFFERENCE = 8, 9, 10
AXIS_K, AXIS_P, AXIS_D, AXIS_NEGD = range(4)


class Overrun(Exception):
    """SIGTERM from the shell's hard timeout."""


def log(msg):
    print(f"[gpu_check {time.perf_counter() - T0:6.1f}s] {msg}",
          file=sys.stderr, flush=True)


T0 = time.perf_counter()


# ===------------------------------------------------------------------=== #
# The float64 reference
# ===------------------------------------------------------------------=== #

def program_mask(nodes, data, nq, nk, head, num_heads, device, rows=None):
    """The [len(rows), nk] bool mask of one group's program (postfix nodes)
    for query rows `rows` (default all nq)."""
    if rows is None:
        rows = torch.arange(nq, device=device, dtype=torch.int64)
    q = rows.to(device=device, dtype=torch.int64)[:, None]
    k = torch.arange(nk, device=device, dtype=torch.int64)[None, :]
    p = q + (nk - nq)
    axes = {AXIS_K: k, AXIS_P: p, AXIS_D: k - p, AXIS_NEGD: p - k}
    full = torch.ones(q.shape[0], nk, dtype=torch.bool, device=device)
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
            stack.append((gp == gk) & full)
        elif kind == BLOCKS:
            # c listed query-block ids, their c + 1 row starts, the columns.
            n_rows = c
            ids = data[begin:begin + n_rows]
            row_start = data[begin + n_rows:begin + 2 * n_rows + 1]
            cols = data[begin + 2 * n_rows + 1:begin + size]
            qb = torch.div(p, a, rounding_mode="floor").expand_as(full)
            kb = torch.div(k, b, rounding_mode="floor").expand_as(full)
            m = ~full
            for r in range(n_rows):
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


def layer_masks(layer, nq, nk, device, rows=None):
    """[heads, rows, nk] bool masks of a manifest layer (skipped heads:
    none)."""
    prog = layer["program"]
    nodes, data, gb = prog["nodes"], prog["data"], prog["group_begin"]
    h = layer["num_heads"]
    n_rows = nq if rows is None else len(rows)
    masks = torch.zeros(h, n_rows, nk, dtype=torch.bool, device=device)
    for head, group in zip(layer["computed_heads"], layer["head_groups"]):
        masks[head] = program_mask(nodes[gb[group]:gb[group + 1]], data, nq,
                                   nk, head, h, device, rows)
    return masks


def reference(q, k, v, masks, group):
    """float64 attention with masks [H, nq, nk] (q: [1, nq, H, D]); rows
    with no key give 0 and LSE -inf."""
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


def o_tolerance(dtype):
    return {torch.bfloat16: 2e-2, torch.float16: 5e-3}.get(dtype, 2e-3)


def grad_tolerance(dtype):
    """dQ, dK, dV against float64, relative to the largest |gradient|: the
    gradients are stored in the inputs' dtype and sum over many more terms
    than O (dK, dV over every query of a GQA group)."""
    return {torch.bfloat16: 4e-2, torch.float16: 1e-2}.get(dtype, 2e-3)


def reference_grads(q, k, v, masks, group, do, dlse):
    """float64 autograd of sum(O * dO) + sum(LSE * dLSE) (rows with keys;
    a row without keys has LSE -inf and no gradient) -> (dq, dk, dv); the
    row maximum is a constant (softmax does not depend on it), so no NaN
    reaches a row without keys."""
    qd, kd, vd = (x.detach().double().requires_grad_() for x in (q, k, v))
    s = (qd.transpose(1, 2) @ kd.transpose(1, 2).repeat_interleave(
        group, dim=1).transpose(-1, -2)) / math.sqrt(q.shape[3])
    s = s.masked_fill(~masks[None], float("-inf"))
    m = s.detach().amax(-1, keepdim=True)
    m = torch.where(torch.isinf(m), torch.zeros_like(m), m)
    p = torch.exp(s - m)
    l = p.sum(-1, keepdim=True)
    seen = l > 0
    safe = torch.where(seen, l, torch.ones_like(l))
    o = (p @ vd.transpose(1, 2).repeat_interleave(group, dim=1)) / safe
    lse = torch.where(seen, m + torch.log(safe), torch.zeros_like(safe))[..., 0]
    loss = (o.transpose(1, 2) * do.double()).sum() + (lse * dlse.double()).sum()
    loss.backward()
    return qd.grad, kd.grad, vd.grad


# ===------------------------------------------------------------------=== #
# Devices: Tessera through the binding, timers
# ===------------------------------------------------------------------=== #

class Device:
    """CUDA: the layer's dtype, torch tensors; CPU (the dry run): float32,
    numpy through the binding's CPU context."""

    def __init__(self, name):
        self.name = name
        self.cuda = name == "cuda"
        self.torch = torch.device(name)

    def dtype(self, layer):
        if not self.cuda:
            return torch.float32
        return torch.float16 if layer["dtype"] == "f16" else torch.bfloat16

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def inputs(self, layer, nq, nk, seed):
        g = torch.Generator(device=self.torch).manual_seed(seed)
        h, hkv, d = layer["num_heads"], layer["num_kv_heads"], layer["head_dim"]
        shapes = ((1, nq, h, d), (1, nk, hkv, d), (1, nk, hkv, d))
        return tuple(torch.randn(s, generator=g, device=self.torch)
                     .to(self.dtype(layer)) for s in shapes)

    def tessera(self, bundle, idx, q, k, v, out=None, lse=True):
        """A callable-free run: (o, lse or None) as torch tensors."""
        if self.cuda:
            return bundle.attention(idx, q, k, v, out=out, lse=lse)
        o = torch.empty_like(q) if out is None else out
        _, l = bundle.attention(idx, q.numpy(), k.numpy(), v.numpy(),
                                out=o.numpy(), lse=lse)
        return o, None if l is None else torch.from_numpy(l)

    def tessera_backward(self, bundle, idx, q, k, v, o, lse, do, dlse):
        """(dq, dk, dv) as torch tensors: the runtime's backward (CUDA
        kernels on a CUDA context, the CPU executor on the dry run)."""
        if self.cuda:
            return bundle.attention_backward(idx, q, k, v, o, lse, do,
                                             dlse=dlse)
        g = bundle.attention_backward(
            idx, *(x.numpy() for x in (q, k, v, o, lse, do)),
            dlse=dlse.numpy())
        return tuple(torch.from_numpy(x) for x in g)

    def tessera_fn(self, bundle, idx, q, k, v):
        """A call for the timer, inputs converted once."""
        out = torch.empty_like(q)
        if self.cuda:
            return lambda: bundle.attention(idx, q, k, v, out=out, lse=False)[0]
        qn, kn, vn, on = q.numpy(), k.numpy(), v.numpy(), out.numpy()

        def run():
            bundle.attention(idx, qn, kn, vn, out=on, lse=False)
            return out
        return run

    def time(self, fn, repeats, warmups=1, target_s=1.0):
        """(median seconds, calls timed, first call's seconds): warm-up,
        then up to `repeats` calls, fewer when one call is long."""
        t = time.perf_counter()
        fn()
        self.sync()
        first = est = time.perf_counter() - t
        # The first call may compile or load: on CUDA time one more (on
        # the CPU dry run the first call is estimate enough).
        if warmups > 1 or self.cuda:
            for _ in range(warmups - 1):
                fn()
            self.sync()
            t = time.perf_counter()
            fn()
            self.sync()
            est = time.perf_counter() - t
        n = max(2, min(repeats, int(target_s / max(est, 1e-6))))
        times = []
        if self.cuda:
            ev = [(torch.cuda.Event(enable_timing=True),
                   torch.cuda.Event(enable_timing=True)) for _ in range(n)]
            for s, e in ev:
                s.record()
                fn()
                e.record()
            torch.cuda.synchronize()
            times = [s.elapsed_time(e) / 1e3 for s, e in ev]
        else:
            for _ in range(n):
                t = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t)
        times.sort()
        return times[len(times) // 2], n, first


def launched_kernels(dev, fn):
    """Names of the tessera_ kernels one call launches (CUDA profiler)."""
    if not dev.cuda:
        return "cpu executor"
    from torch.profiler import ProfilerActivity, profile
    try:
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
    except Exception as e:  # no CUPTI: the timing stands without the names
        return f"profiler unavailable ({type(e).__name__})"
    names = sorted({e.key for e in prof.key_averages()
                    if e.key.startswith("tessera_")})
    return ",".join(names) or "none seen"


# ===------------------------------------------------------------------=== #
# Environment
# ===------------------------------------------------------------------=== #

def _version(module):
    try:
        m = __import__(module)
    except Exception as e:  # an absent peer is a finding, not an error
        return None, f"absent ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return m, getattr(m, "__version__", "unknown version")


def _nvrtc_version():
    import ctypes
    names = [os.environ.get("TESSERA_NVRTC"), "libnvrtc.so", "libnvrtc.so.13",
             "libnvrtc.so.12"]
    for root in (os.environ.get("CUDA_HOME"), "/usr/local/cuda"):
        if root:
            names.append(os.path.join(root, "lib64", "libnvrtc.so"))
    for n in names:
        if not n:
            continue
        try:
            lib = ctypes.CDLL(n)
        except OSError:
            continue
        major, minor = ctypes.c_int(), ctypes.c_int()
        if lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor)) == 0:
            return f"{major.value}.{minor.value} ({n})"
    return "not found (set TESSERA_NVRTC)"


def environment(dev, bundle_dirs):
    env = {"python": sys.version.split()[0],
           "torch": torch.__version__ + (f", CUDA {torch.version.cuda}"
                                         if torch.version.cuda else ""),
           "tessera runtime": tessera.library_path()}
    _, env["triton"] = _version("triton")
    for d in bundle_dirs:
        stamp = os.path.join(os.path.dirname(os.path.normpath(d)), "..",
                             "prepared.txt")
        if os.path.exists(stamp):
            env["prepared"] = open(stamp).read().strip().replace("\n", "; ")
            break
    if dev.cuda:
        p = torch.cuda.get_device_properties(0)
        env["device"] = (f"{p.name}, sm_{p.major}{p.minor}, "
                         f"{p.multi_processor_count} SMs, "
                         f"{p.total_memory / 2**30:.0f} GiB")
        try:
            smi = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version,clocks.max.sm,"
                 "power.limit", "--format=csv,noheader"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                timeout=20).stdout.strip().splitlines()
            env["driver (nvidia-smi: version, max SM clock, power limit)"] = \
                smi[0] if smi else "nvidia-smi printed nothing"
        except (OSError, subprocess.SubprocessError) as e:
            env["driver (nvidia-smi)"] = f"unavailable ({e})"
        try:
            import ctypes
            v = ctypes.c_int()
            ctypes.CDLL("libcuda.so.1").cuDriverGetVersion(ctypes.byref(v))
            env["CUDA driver API"] = f"{v.value // 1000}.{v.value % 1000 // 10}"
        except OSError as e:
            env["CUDA driver API"] = f"unavailable ({e})"
        env["NVRTC"] = _nvrtc_version()
    else:
        env["device"] = f"CPU (dry run), {os.cpu_count()} cores"
    for name in ("flash_attn", "flashinfer"):
        _, env[name] = _version(name)
    return env


# ===------------------------------------------------------------------=== #
# Kernel paths
# ===------------------------------------------------------------------=== #

def _tag(kernel):
    return kernel.get("path") or kernel.get("arch")


def arch_runnable(arch, cc):
    """Whether a device of compute capability cc (e.g. 90) runs `arch`
    (sm_XY: XY <= cc; sm_XYa: XY == cc)."""
    if not arch or not arch.startswith("sm_"):
        return True
    num = arch[3:].rstrip("af")
    if not num.isdigit():
        return True
    return int(num) == cc if arch[-1] in "af" else int(num) <= cc


def kernel_paths(manifest):
    """The distinct path tags of the manifest's kernels, in order."""
    tags = []
    for k in manifest.get("kernels", []):
        t = _tag(k)
        if t and t not in tags:
            tags.append(t)
    return tags


def path_variants(bdir, manifest):
    """[(path name, bundle dir, manifest, arch or None)]: one per path tag
    (the bundle itself each time: the runtime chooses the kernels when
    TESSERA_KERNEL_PATH names the path, see load_path), or "default"."""
    tags = kernel_paths(manifest)
    if len(tags) <= 1:
        arch = next((k.get("arch") for k in manifest.get("kernels", [])
                     if k.get("arch")), None)
        return [(tags[0] if tags else "default", bdir, manifest, arch)]
    return [(tag, bdir, manifest,
             next((k.get("arch") for k in manifest["kernels"]
                   if _tag(k) == tag and k.get("arch")), None))
            for tag in tags]


def load_path(ctx, bdir, tag, paths):
    """ctx.load(bdir) with TESSERA_KERNEL_PATH=tag where the bundle has
    several paths (the variable is read when a bundle loads)."""
    if paths <= 1:
        return ctx.load(bdir)
    old = os.environ.get("TESSERA_KERNEL_PATH")
    os.environ["TESSERA_KERNEL_PATH"] = tag
    try:
        return ctx.load(bdir)
    finally:
        if old is None:
            del os.environ["TESSERA_KERNEL_PATH"]
        else:
            os.environ["TESSERA_KERNEL_PATH"] = old


def kernel_blocks(manifest, layer, path=None):
    """(block_q, block_k) of the tiles the layer's kernel visits on `path`
    (the sm_90a twins' rows under "wgmma", else the attention kernel's)."""
    layer = next((l for l in manifest["layers"]
                  if l["index"] == layer["index"]), layer)
    first = (layer.get("kernels") or [{}])[0].get("name")
    if path == "wgmma" and layer.get("wgmma"):
        first = layer["wgmma"]["kernels"][0]
    k = next((k for k in manifest.get("kernels", [])
              if k.get("name") == first), {})
    bq = k.get("block_q") or layer.get("kernel_block_q") or layer["block_q"]
    bk = k.get("block_k") or layer["block_k"]
    return int(bq), int(bk)


# ===------------------------------------------------------------------=== #
# Layers, cases and attended pairs
# ===------------------------------------------------------------------=== #

def layer_kind(layer):
    pats = {g["pattern"] for g in layer["groups"]}
    if layer["skipped_heads"] or len(pats) != 1:
        return "sparse"
    return {"#attn.dense": "dense", "#attn.causal": "causal"}.get(
        pats.pop(), "sparse")


def layer_shape(layer):
    return (layer["num_heads"], layer["num_kv_heads"], layer["head_dim"],
            layer["dtype"])


def layer_key(layer):
    return (tuple(sorted({g["pattern"] for g in layer["groups"]})),
            len(layer["skipped_heads"])) + layer_shape(layer)


def attended_pairs(cpu_bundle, bdir, layer, n, bq, bk, device):
    """The attended pairs at Nq = Nk = n: the full tiles' areas
    plus the allowed pairs of the partial tiles, evaluated with the layer's
    program (tessera.torch.mask_mod) on `device`."""
    import numpy as np
    import tessera.torch as tt
    cls = cpu_bundle.tile_classes(layer["index"], n, n, bq, bk)
    tq, tk = cls.shape[1], cls.shape[2]
    rows = np.minimum(bq, n - np.arange(tq) * bq)
    cols = np.minimum(bk, n - np.arange(tk) * bk)
    full = (cls == 2)
    pairs = int(np.einsum("hij,i,j->", full.astype(np.int64), rows, cols))
    part = np.argwhere(cls == 1)
    if len(part):
        mod = tt.mask_mod(bdir, layer["index"], n, n, device=device)
        ar_q = torch.arange(bq, device=device)
        ar_k = torch.arange(bk, device=device)
        step = max(1, (1 << 24) // (bq * bk))
        for s in range(0, len(part), step):
            t = torch.from_numpy(part[s:s + step]).to(device)
            h = t[:, 0, None, None]
            qi = t[:, 1, None, None] * bq + ar_q[None, :, None]
            ki = t[:, 2, None, None] * bk + ar_k[None, None, :]
            m = mod(0, h, qi, ki) & (qi < n) & (ki < n)
            pairs += int(m.sum().item())
    return pairs


def select_cases(bundles, spec, per_bundle):
    """[(bundle name, layer)]: the timing cases."""
    if spec != "auto":
        out = []
        for item in spec.split(","):
            name, idx = item.rsplit(":", 1)
            b = bundles.get(name)
            if b is None:
                raise SystemExit(f"gpu_check: --cases names no loaded bundle {name}")
            layer = next((l for l in b["manifest"]["layers"]
                          if l["index"] == int(idx)), None)
            if layer is None or layer.get("dynamic_groups"):
                raise SystemExit(f"gpu_check: {item} is no static layer")
            out.append((name, layer))
        return out
    out, seen = [], set()
    ref = bundles.get(REFERENCE)
    if ref:
        for kind in ("causal", "dense"):
            for layer in ref["manifest"]["layers"]:
                if layer_kind(layer) == kind and layer_shape(layer) == HEADLINE:
                    out.append((REFERENCE, layer))
                    seen.add(layer_key(layer))
                    break
    for name, b in bundles.items():
        if name == REFERENCE:
            continue
        taken = 0
        for layer in b["manifest"]["layers"]:
            if layer.get("dynamic_groups") or layer_key(layer) in seen:
                continue
            if taken == per_bundle:
                break
            seen.add(layer_key(layer))
            out.append((name, layer))
            taken += 1
    return out


# ===------------------------------------------------------------------=== #
# Peers
# ===------------------------------------------------------------------=== #

class NotHere(Exception):
    """A peer that is absent or cannot compute this case: reported as such."""


def peer_calls(name, dev, kind, q, k, v, flex_mode, block_mask_fn):
    """(what it computes, fn returning O as [B, N, H, D]) of a peer, or
    NotHere. kind: the layer's kind (dense, causal, sparse)."""
    gqa = q.shape[2] != k.shape[2]
    causal = kind == "causal"
    computes = "same pattern" if kind in ("dense", "causal") else "dense"
    if name in ("sdpa-flash", "sdpa-cudnn"):
        # SDPA's cuDNN backend: a FlashAttention-3-class kernel on Hopper,
        # the peer of the sm_90a path where flash_attn_interface is absent.
        if name == "sdpa-cudnn" and not dev.cuda:
            raise NotHere("CUDA only")
        from torch.nn.attention import SDPBackend, sdpa_kernel
        backend = (SDPBackend.FLASH_ATTENTION if name == "sdpa-flash"
                   else SDPBackend.CUDNN_ATTENTION)
        F = torch.nn.functional
        qkv = [x.transpose(1, 2).contiguous() for x in (q, k, v)]

        def run():
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(
                    *qkv, is_causal=causal, enable_gqa=gqa).transpose(1, 2)
        try:
            run()
        except RuntimeError:
            # A backend without GQA: K and V repeated per query head.
            rep = q.shape[2] // k.shape[2]
            qkv[1:] = [x.repeat_interleave(rep, 1).contiguous() for x in qkv[1:]]
            gqa = False
            computes += ", K/V repeated (no GQA in this backend)"
        return computes, run
    if name == "flash_attn_3":
        try:
            import flash_attn_interface as fa3
        except ImportError:
            raise NotHere("absent (flash_attn_interface: FlashAttention-3's "
                          "Hopper build)")

        def run():
            r = fa3.flash_attn_func(q, k, v, causal=causal)
            return r[0] if isinstance(r, tuple) else r
        return computes, run
    if name == "flex":
        if flex_mode == "off":
            raise NotHere("off (--flex off)")
        from torch.nn.attention.flex_attention import flex_attention
        qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))
        fn = FLEX_COMPILED if flex_mode == "compile" else flex_attention
        bm = block_mask_fn()
        return "same pattern", lambda: fn(qt, kt, vt, block_mask=bm,
                                          enable_gqa=gqa).transpose(1, 2)
    # flash_attn and FlashInfer run on CUDA; on the CPU dry run they are
    # absent, or test stand-ins (test/Python/Inputs/gpu_check_stubs).
    if name == "flash_attn":
        mod, ver = _version("flash_attn")
        if mod is None:
            raise NotHere(ver)
        from flash_attn import flash_attn_func
        return computes, lambda: flash_attn_func(q, k, v, causal=causal)
    if name == "flashinfer":
        mod, ver = _version("flashinfer")
        if mod is None:
            raise NotHere(ver)
        return computes, lambda: mod.single_prefill_with_kv_cache(
            q[0], k[0], v[0], causal=causal, kv_layout="NHD")[None]
    raise ValueError(name)


FLEX_COMPILED = None
PEERS = ("sdpa-flash", "sdpa-cudnn", "flash_attn", "flash_attn_3",
         "flashinfer", "flex")


# ===------------------------------------------------------------------=== #
# Budget
# ===------------------------------------------------------------------=== #

class Budget:
    """Phases with shares of a total; a phase's unused time carries over."""

    def __init__(self, total):
        self.total = total
        self.deadline = self.start_time = time.perf_counter()

    def start(self, share):
        self.deadline = max(self.deadline, time.perf_counter()) + share * self.total

    def left(self):
        return self.deadline - time.perf_counter()

    def total_left(self):
        return self.start_time + self.total - time.perf_counter()


# ===------------------------------------------------------------------=== #
# Phases
# ===------------------------------------------------------------------=== #

def phase_load(args, dev, ctx, cpu_ctx, budget, report):
    bundles = {}
    cc = 0
    if dev.cuda:
        major, minor = torch.cuda.get_device_capability()
        cc = major * 10 + minor
    dirs = sorted(args.bundles, key=lambda d: (os.path.basename(
        os.path.normpath(d)) != REFERENCE, d))
    for bdir in dirs:
        name = os.path.basename(os.path.normpath(bdir))
        manifest = json.load(open(os.path.join(bdir, "manifest.json")))
        paths = []
        variants = path_variants(bdir, manifest)
        for tag, pdir, pman, arch in variants:
            row = {"bundle": name, "path": tag, "kernels": len(pman.get("kernels", []))}
            report["loads"].append(row)
            if dev.cuda and not arch_runnable(arch, cc):
                row["status"] = f"skipped: {arch} does not run on sm_{cc}"
                continue
            # A bundle not loaded is neither checked nor timed: loads stop
            # only when the whole budget is spent.
            if budget.total_left() <= 0:
                row["status"] = "skipped (budget)"
                continue
            log(f"load {name} path {tag}")
            try:
                t = time.perf_counter()
                b = load_path(ctx, pdir, tag, len(variants))
                row["cold_s"] = time.perf_counter() - t
                t = time.perf_counter()
                load_path(ctx, pdir, tag, len(variants))
                row["warm_s"] = time.perf_counter() - t
            except tessera.TesseraError as e:
                row["status"] = f"FAIL: {e}"
                report["failures"] += 1
                continue
            row["status"] = "ok"
            paths.append({"path": tag, "dir": pdir, "manifest": pman,
                          "bundle": b, "cpu": cpu_ctx.load(pdir)})
        if paths:
            bundles[name] = {"manifest": manifest, "paths": paths}
    return bundles


def check_layer(args, dev, pth, layer, nq, nk, seed, inject):
    idx = layer["index"]
    q, k, v = dev.inputs(layer, nq, nk, seed)
    o, lse = dev.tessera(pth["bundle"], idx, q, k, v)
    dev.sync()
    if inject:
        o[0, -1, 0, 0] += 1.0
    masks = layer_masks(layer, nq, nk, dev.torch)
    ref_o, ref_lse = reference(q, k, v, masks,
                               layer["num_heads"] // layer["num_kv_heads"])
    err = ((o.double() - ref_o).abs().max() / ref_o.abs().max().clamp_min(1e-30)).item()
    finite = torch.isfinite(ref_lse)
    lse_d = lse.double()
    lse_err = (lse_d[finite] - ref_lse[finite]).abs().max().item() if finite.any() else 0.0
    empty_ok = bool(torch.equal(torch.isneginf(lse_d), ~finite))
    ok = (err <= o_tolerance(q.dtype) and lse_err <= 1e-2 and empty_ok
          and not torch.isnan(o).any().item())
    return {"layer": idx, "nq": nq, "nk": nk, "err": err, "lse_err": lse_err,
            "empty_rows": int((~finite).sum().item()), "empty_ok": empty_ok,
            "ok": ok}


def phase_check(args, dev, bundles, budget, report):
    inject = args.inject_error
    for name, b in bundles.items():
        for pth in b["paths"]:
            summary = {"bundle": name, "path": pth["path"], "layers": 0,
                       "skipped": 0, "worst": None, "failed": []}
            report["checks"].append(summary)
            seen = set()
            for layer in pth["manifest"]["layers"]:
                if layer.get("dynamic_groups"):
                    continue  # input-dependent masks: bench/gpu_dynamic.py
                key = json.dumps([layer["groups"], layer["computed_heads"],
                                  layer["skipped_heads"]])
                if key in seen:
                    continue
                seen.add(key)
                if budget.left() <= 0:
                    summary["skipped"] += 1
                    continue
                log(f"check {name} path {pth['path']} layer {layer['index']}")
                c = args.check_len
                for nq, nk in ((c - 5, c + 37), (c + 37, c - 5)):
                    try:
                        r = check_layer(args, dev, pth, layer, nq, nk,
                                        layer["index"], inject)
                    except tessera.TesseraError as e:
                        r = {"layer": layer["index"], "nq": nq, "nk": nk,
                             "err": float("inf"), "lse_err": float("inf"),
                             "empty_rows": 0, "empty_ok": False, "ok": False,
                             "error": brief(e)}
                    inject = False
                    if summary["worst"] is None or r["err"] > summary["worst"]["err"]:
                        summary["worst"] = r
                    if not r["ok"]:
                        summary["failed"].append(r)
                        report["failures"] += 1
                summary["layers"] += 1


def check_backward(dev, bundle, layer, nq, nk, seed, inject=False):
    """The runtime's dQ, dK, dV of one layer against float64 autograd
    (`inject`: one element of dQ perturbed, the failure path's test)."""
    idx = layer["index"]
    q, k, v = dev.inputs(layer, nq, nk, seed)
    g = torch.Generator(device=dev.torch).manual_seed(seed + 1)
    do = torch.randn(q.shape, generator=g, device=dev.torch).to(q.dtype)
    o, lse = dev.tessera(bundle, idx, q, k, v)
    dlse = torch.randn(lse.shape, generator=g, device=dev.torch)
    dlse = torch.where(torch.isfinite(lse), dlse, torch.zeros_like(dlse))
    grads = dev.tessera_backward(bundle, idx, q, k, v, o, lse, do, dlse)
    dev.sync()
    if inject:
        grads[0][0, -1, 0, 0] += grads[0].abs().max() + 1.0
    masks = layer_masks(layer, nq, nk, dev.torch)
    ref = reference_grads(q, k, v, masks,
                          layer["num_heads"] // layer["num_kv_heads"], do,
                          dlse)
    errs = [((x.double() - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()
            for x, r in zip(grads, ref)]
    nan = any(torch.isnan(x).any().item() for x in grads)
    return {"layer": idx, "nq": nq, "nk": nk, "errs": errs,
            "ok": not nan and max(errs) <= grad_tolerance(q.dtype)}


def check_autograd(dev, bdir, layer, n):
    """tessera.torch's autograd (the op's backward on the device) against
    the binding's backward called directly: the same numbers."""
    import tessera.torch as tt
    q, k, v = dev.inputs(layer, n, n, 11)
    g = torch.Generator(device=dev.torch).manual_seed(12)
    do = torch.randn(q.shape, generator=g, device=dev.torch).to(q.dtype)
    qr, kr, vr = (x.clone().requires_grad_() for x in (q, k, v))
    o, lse = tt.attention(qr, kr, vr, bdir, layer=layer["index"])
    (o * do).sum().backward()
    dev.sync()
    bundle = tt._bundle(os.path.abspath(bdir), q.device)
    want = dev.tessera_backward(bundle, layer["index"], q, k, v, o.detach(),
                                lse.detach(), do, torch.zeros_like(lse))
    dev.sync()
    errs = [((a.grad.double() - b.double()).abs().max() /
             b.double().abs().max().clamp_min(1e-30)).item()
            for a, b in zip((qr, kr, vr), want)]
    return {"errs": errs, "ok": max(errs) <= grad_tolerance(q.dtype)}


def phase_backward(args, dev, bundles, budget, report):
    """The backward: every bundle's first two distinct static layers with
    backward kernels, checked at the check lengths against float64; the
    torch op's autograd once; then the headline causal layer's forward and
    forward + backward timed against SDPA's flash backend and FlexAttention
    (the BlockMask; compiled on CUDA; FlexAttention has no backward on the
    CPU)."""
    inject = args.inject_error
    for name, b in bundles.items():
        pth = b["paths"][0]  # one set of backward kernels for every path
        seen = set()
        for layer in pth["manifest"]["layers"]:
            if layer.get("dynamic_groups") or not layer.get("backward"):
                continue
            key = json.dumps([layer["groups"], layer["computed_heads"]])
            if key in seen or len(seen) >= 2:
                continue
            seen.add(key)
            row = {"bundle": name, "layer": layer["index"]}
            report["backward"].append(row)
            if budget.left() <= 0:
                row["status"] = "skipped (budget)"
                continue
            log(f"backward {name} layer {layer['index']}")
            c = args.check_len
            worst = None
            for nq, nk in ((c - 5, c + 37), (c + 37, c - 5)):
                try:
                    r = check_backward(dev, pth["bundle"], layer, nq, nk,
                                       layer["index"], inject)
                except tessera.TesseraError as e:
                    r = {"nq": nq, "nk": nk, "errs": [float("inf")] * 3,
                         "ok": False, "error": brief(e)}
                inject = False
                if worst is None or max(r["errs"]) > max(worst["errs"]):
                    worst = r
                if not r["ok"]:
                    report["failures"] += 1
            row.update(worst=worst, status="ok" if worst["ok"] else "FAIL")
    ref = bundles.get(REFERENCE)
    if not ref:
        return
    pth = ref["paths"][0]
    causal = next((l for l in pth["manifest"]["layers"]
                   if layer_kind(l) == "causal"), None)
    if causal is None or not causal.get("backward"):
        return
    if budget.left() > 0:
        try:
            r = check_autograd(dev, pth["dir"], causal, args.check_len)
        except (tessera.TesseraError, RuntimeError, NotImplementedError) as e:
            r = {"errs": [float("inf")] * 3, "ok": False, "error": brief(e)}
        r.update(bundle=REFERENCE, layer=causal["index"])
        report["autograd"] = r
        if not r["ok"]:
            report["failures"] += 1
    n = int(str(args.time_lens).split(",")[-1])
    q, k, v = dev.inputs(causal, n, n, 5)
    do = torch.randn(q.shape, device=dev.torch).to(q.dtype)
    bundle, idx = pth["bundle"], causal["index"]

    def tessera_fwd():
        return dev.tessera(bundle, idx, q, k, v)

    def tessera_fwd_bwd():
        o, lse = dev.tessera(bundle, idx, q, k, v)
        return dev.tessera_backward(bundle, idx, q, k, v, o, lse, do,
                                    torch.zeros_like(lse))
    gqa = q.shape[2] != k.shape[2]
    F = torch.nn.functional
    qt, kt, vt = (x.transpose(1, 2).contiguous().requires_grad_()
                  for x in (q, k, v))
    dot = do.transpose(1, 2).contiguous()

    def sdpa(backward):
        from torch.nn.attention import SDPBackend, sdpa_kernel
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            o = F.scaled_dot_product_attention(qt, kt, vt, is_causal=True,
                                               enable_gqa=gqa)
        if backward:
            o.backward(dot)
        return o

    def flex(backward):
        from torch.nn.attention.flex_attention import flex_attention
        import tessera.torch as tt
        if not hasattr(flex, "bm"):
            flex.bm = tt.block_mask(pth["dir"], idx, n, n, device=dev.torch)
            flex.fn = torch.compile(flex_attention) if \
                args.flex == "compile" else flex_attention
        o = flex.fn(qt, kt, vt, block_mask=flex.bm, enable_gqa=gqa)
        if backward:
            o.backward(dot)
        return o
    impls = [("tessera", tessera_fwd, tessera_fwd_bwd),
             ("sdpa-flash", lambda: sdpa(False), lambda: sdpa(True))]
    if args.flex != "off":
        impls.append(("flex", lambda: flex(False), lambda: flex(True)))
    for impl, fwd, both in impls:
        row = {"impl": impl, "n": n, "case": f"{REFERENCE} causal"}
        report["backward_times"].append(row)
        if budget.left() <= 0:
            row["status"] = "skipped (budget)"
            continue
        log(f"backward timing {impl} at {n}")
        try:
            row["fwd_s"] = dev.time(fwd, args.repeats)[0]
            row["both_s"] = dev.time(both, args.repeats)[0]
            row["status"] = "ok"
        except Exception as e:  # a peer without a backward here: say so
            row["status"] = brief(e)
            if impl == "tessera":
                report["failures"] += 1


def sampled_check(dev, layer, q, k, v, o, n):
    """Tessera's O at the timing length on 64 query rows vs float64."""
    g = torch.Generator(device="cpu").manual_seed(n)
    rows = torch.cat([torch.arange(min(8, n)), torch.arange(max(0, n - 8), n),
                      torch.randint(0, n, (48,), generator=g)]).unique()
    rows = rows.to(dev.torch)
    masks = layer_masks(layer, n, n, dev.torch, rows)
    ref, _ = reference(q[:, rows], k, v, masks,
                       layer["num_heads"] // layer["num_kv_heads"])
    got = o[:, rows].double()
    err = ((got - ref).abs().max() / ref.abs().max().clamp_min(1e-30)).item()
    ok = err <= o_tolerance(q.dtype) and not torch.isnan(got).any().item()
    return {"rows": len(rows), "err": err, "ok": ok}


def dense_reference(bundles, layer):
    """(bundle name, layer) of a dense layer of the same shape."""
    order = [REFERENCE] + [n for n in bundles if n != REFERENCE]
    for name in order:
        b = bundles.get(name)
        if not b:
            continue
        for l in b["manifest"]["layers"]:
            if layer_kind(l) == "dense" and layer_shape(l) == layer_shape(layer) \
                    and not l.get("dynamic_groups"):
                return name, l
    return None, None


def brief(e):
    """One line of an exception, for a table cell."""
    text = str(e).splitlines()[0][:160] if str(e) else ""
    return f"{type(e).__name__}: {text}"


class Timer:
    """The timing phase's state: what was timed (Tessera calls are timed
    once per bundle, layer and length: the dense kernel serves several
    cases) and whether FlexAttention has compiled once."""

    def __init__(self, args, dev, bundles, budget, report):
        self.args, self.dev, self.bundles = args, dev, bundles
        self.budget, self.report = budget, report
        self.memo = {}
        self.flex_compiled = False

    def row(self, row, status):
        row["status"] = status
        self.report["timings"].append(row)

    def tessera(self, pth, layer, n, q, k, v, row):
        """Times a Tessera layer into `row`; returns (seconds, a call on
        these inputs), or None when the runtime refused (a failure)."""
        fn = self.dev.tessera_fn(pth["bundle"], layer["index"], q, k, v)
        key = (pth["dir"], pth["path"], layer["index"], n)
        try:
            if key not in self.memo:
                t, reps, _ = self.dev.time(fn, self.args.repeats)
                self.memo[key] = {"s": t, "reps": reps,
                                  "kernels": launched_kernels(self.dev, fn)}
        except tessera.TesseraError as e:
            self.report["failures"] += 1
            self.row(row, f"FAIL: {brief(e)}")
            return None
        m = self.memo[key]
        row.update(s=m["s"], reps=m["reps"], note=m["kernels"])
        if not any(r["case"] == row["case"] and r["n"] == n and
                   r["impl"] == row["impl"] for r in self.report["timings"]):
            self.row(row, "ok")
        return m["s"], fn

    def paths(self, case, name, layer, n, q, k, v, flops):
        """Tessera on each kernel path of the case's bundle, its output
        checked on sampled rows, and the dense kernel of the same shape."""
        label, kind = case["case"], case["kind"]
        dname, dlayer = dense_reference(self.bundles, layer)
        dense_flops = 4 * layer["head_dim"] * layer["num_heads"] * n * n
        for pth in self.bundles[name]["paths"]:
            bq, bk = kernel_blocks(pth["manifest"], layer, pth["path"])
            cls = pth["cpu"].tile_classes(layer["index"], n, n, bq, bk)
            pc = {"path": pth["path"], "tile": f"{bq}x{bk}",
                  "visited": float((cls != 0).mean()) if cls.size else 0.0}
            case["paths"].append(pc)
            row = {"case": label, "n": n, "impl": f"tessera [{pth['path']}]",
                   "computes": "same pattern", "flops": flops}
            if self.budget.left() <= 0:
                self.row(row, "skipped (budget)")
                continue
            timed = self.tessera(pth, layer, n, q, k, v, row)
            if timed is None:
                continue
            pc["s"], fn = timed
            o = fn()
            self.dev.sync()
            chk = sampled_check(self.dev, layer, q, k, v, o, n)
            chk.update(case=label, path=pth["path"], n=n)
            self.report["sampled"].append(chk)
            self.report["failures"] += not chk["ok"]
            pc["out"] = o.clone()
            if kind == "dense":
                pc["dense_s"] = pc["s"]
            if kind == "dense" or dname is None:
                continue
            dpaths = self.bundles[dname]["paths"]
            dp = next((x for x in dpaths if x["path"] == pth["path"]), dpaths[0])
            drow = {"case": label, "n": n, "computes": "dense",
                    "flops": dense_flops,
                    "impl": f"tessera dense [{dp['path']}] ({dname}:{dlayer['index']})"}
            if self.budget.left() <= 0:
                self.row(drow, "skipped (budget)")
                continue
            timed = self.tessera(dp, dlayer, n, q, k, v, drow)
            if timed is not None:
                pc["dense_s"] = timed[0]

    def peers(self, case, pdir, layer, n, q, k, v, flops):
        """The other implementations, each against Tessera's output where
        it computes the same pattern."""
        import tessera.torch as tt
        label, kind = case["case"], case["kind"]
        ref = next((pc["out"] for pc in case["paths"] if "out" in pc), None)
        dense_flops = 4 * layer["head_dim"] * layer["num_heads"] * n * n
        for pname in PEERS:
            row = {"case": label, "n": n, "impl": pname}
            # torch.compile's first FlexAttention takes longest.
            reserve = 0.0
            if pname == "flex" and self.args.flex == "compile":
                reserve = 30.0 if self.flex_compiled else 60.0
            if self.budget.left() <= reserve:
                self.row(row, "skipped (budget)")
                continue
            try:
                computes, fn = peer_calls(
                    pname, self.dev, kind, q, k, v, self.args.flex,
                    lambda: tt.block_mask(pdir, layer["index"], n, n,
                                          block_size=128, device=self.dev.torch))
                log(f"  {pname}")
                t, reps, first = self.dev.time(
                    fn, self.args.repeats, warmups=2 if pname == "flex" else 1)
                out = fn()
                self.dev.sync()
            except NotHere as e:
                self.row(row, str(e))
                continue
            except Exception as e:  # a peer's failure is not Tessera's
                self.row(row, f"failed: {brief(e)}")
                continue
            self.flex_compiled |= pname == "flex"
            row.update(computes=computes, s=t, reps=reps,
                       flops=flops if computes.startswith("same") else dense_flops)
            notes = []
            if pname == "flex":
                notes.append(f"first call {first:.1f} s ({self.args.flex})")
            if computes.startswith("same") and ref is not None:
                d = ((out.double() - ref.double()).abs().max()
                     / ref.double().abs().max().clamp_min(1e-30)).item()
                notes.append(f"max rel diff vs tessera {d:.1e}")
            row["note"] = "; ".join(notes)
            self.row(row, "ok")

    def case(self, name, layer, n, headline):
        kind = layer_kind(layer)
        label = (f"{name}:{layer['index']} ({kind}, H{layer['num_heads']}/"
                 f"{layer['num_kv_heads']} d{layer['head_dim']} {layer['dtype']})")
        case = {"case": label, "bundle": name, "layer": layer["index"],
                "kind": kind, "n": n, "headline": headline, "paths": []}
        self.report["cases"].append(case)
        if self.budget.left() <= 0:
            case["status"] = "skipped (budget)"
            return
        log(f"time {label} at {n}")
        q, k, v = self.dev.inputs(layer, n, n, n)
        # The pairs do not depend on the path (the visited tiles do).
        p0 = self.bundles[name]["paths"][0]
        pairs = attended_pairs(p0["cpu"], p0["dir"], layer, n,
                               *kernel_blocks(p0["manifest"], layer, p0["path"]),
                               self.dev.torch)
        case["pairs"] = pairs
        case["density"] = pairs / (layer["num_heads"] * n * n)
        flops = 4 * layer["head_dim"] * pairs
        self.paths(case, name, layer, n, q, k, v, flops)
        self.peers(case, p0["dir"], layer, n, q, k, v, flops)
        first = next((pc["s"] for pc in case["paths"] if pc.get("s")), None)
        for pc in case["paths"]:
            pc.pop("out", None)
        for row in self.report["timings"]:
            if first and row["case"] == label and row["n"] == n and row.get("s"):
                row["vs_tessera"] = row["s"] / first
        if self.dev.cuda:
            torch.cuda.empty_cache()


def phase_time(args, dev, bundles, budget, report):
    global FLEX_COMPILED
    if args.flex == "compile":
        import torch._dynamo
        # Every case's mask_mod is a new function: room for all of them, so
        # that none falls back to eager (which materialises the scores).
        for knob in ("cache_size_limit", "recompile_limit",
                     "accumulated_cache_size_limit",
                     "accumulated_recompile_limit"):
            if hasattr(torch._dynamo.config, knob):
                setattr(torch._dynamo.config, knob, 256)
        from torch.nn.attention.flex_attention import flex_attention
        FLEX_COMPILED = torch.compile(flex_attention, dynamic=False)
    timer = Timer(args, dev, bundles, budget, report)
    lens = [int(x) for x in args.time_lens.split(",") if x]
    for name, layer in select_cases(bundles, args.cases,
                                    args.max_cases_per_bundle):
        for n in lens:
            headline = name == REFERENCE and layer_kind(layer) == "causal" \
                and layer_shape(layer) == HEADLINE and n == max(lens)
            timer.case(name, layer, n, headline)


# ===------------------------------------------------------------------=== #
# Report
# ===------------------------------------------------------------------=== #

def table(header, rows):
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(str(x) for x in r) + " |")
    print()


def goals(report):
    """(headline rows, sparse rows) of the goals table."""
    head, sparse = [], []
    by_case = {}
    for row in report["timings"]:
        by_case.setdefault((row["case"], row["n"]), []).append(row)
    for case in report["cases"]:
        rows = by_case.get((case["case"], case["n"]), [])
        if case["headline"]:
            fa = next((r for r in rows if r["impl"] == "flash_attn" and r.get("s")), None)
            which = f"flash_attn {_version('flash_attn')[1]}"
            if fa is None:
                fa = next((r for r in rows if r["impl"] == "sdpa-flash" and r.get("s")), None)
                which = "SDPA flash backend (FlashAttention-2's kernel; flash_attn absent)"
            # The sm_90a path's peer is FlashAttention-3 (issue 18):
            # flash_attn_interface, or SDPA's cuDNN backend where it is
            # absent.
            fa3 = next((r for r in rows if r["impl"] == "flash_attn_3" and r.get("s")), None)
            which3 = "flash_attn_3"
            if fa3 is None:
                fa3 = next((r for r in rows if r["impl"] == "sdpa-cudnn" and r.get("s")), None)
                which3 = "SDPA cuDNN backend (flash_attn_interface absent)"
            for pc in case["paths"]:
                peer, name = (fa3, which3) if pc["path"] == "wgmma" else (fa, which)
                if pc.get("s") and peer:
                    ratio = peer["s"] / pc["s"]
                    head.append((case["case"], pc["path"], case["n"],
                                 f"{pc['s'] * 1e3:.3f}", f"{peer['s'] * 1e3:.3f}", name,
                                 f"{ratio:.2f}", ">= 0.90",
                                 "met" if ratio >= 0.9 else "not met"))
                else:
                    head.append((case["case"], pc["path"], case["n"], "-", "-",
                                 "-", "-", ">= 0.90", "not timed"))
        if case["kind"] == "dense":
            continue
        for pc in case["paths"]:
            if pc.get("s") and pc.get("dense_s"):
                ratio = pc["s"] / pc["dense_s"]
                limit = pc["visited"] + 0.05
                sparse.append((case["case"], pc["path"], case["n"], pc["tile"],
                               f"{pc['visited']:.3f}", f"{case['density']:.3f}",
                               f"{pc['s'] * 1e3:.3f}", f"{pc['dense_s'] * 1e3:.3f}",
                               f"{ratio:.3f}", f"<= {limit:.3f}",
                               "met" if ratio <= limit else "not met"))
            else:
                sparse.append((case["case"], pc["path"], case["n"], pc["tile"],
                               f"{pc['visited']:.3f}",
                               f"{case.get('density', float('nan')):.3f}",
                               "-", "-", "-", "-", "not timed"))
    return head, sparse


def print_report(report, cut):
    print("## GPU check" + (" (CUT SHORT by the hard timeout)" if cut else ""))
    print()
    for k, v in report["env"].items():
        print(f"- {k}: {v}")
    print()
    print("### Loads")
    table(("bundle", "path", "kernels", "cold load s", "warm load ms", "status"),
          [(r["bundle"], r["path"], r["kernels"],
            f"{r['cold_s']:.2f}" if "cold_s" in r else "-",
            f"{r['warm_s'] * 1e3:.1f}" if "warm_s" in r else "-",
            r.get("status", "not reached")) for r in report["loads"]])
    print("### Checks against float64 (static layers; dynamic: gpu_dynamic.py)")
    rows = []
    for s in report["checks"]:
        w = s["worst"]
        rows.append((s["bundle"], s["path"], s["layers"], s["skipped"],
                     f"{w['err']:.1e} (layer {w['layer']}, {w['nq']}x{w['nk']})" if w else "-",
                     len(s["failed"]), "FAIL" if s["failed"] else
                     ("ok" if s["layers"] else "not run")))
    table(("bundle", "path", "distinct layers checked", "skipped (budget)",
           "worst max rel err of O", "failed shapes", "check"), rows)
    for s in report["checks"]:
        for r in s["failed"]:
            what = r.get("error") or (
                f"rel err {r['err']:.2e}, LSE err {r['lse_err']:.2e}, empty "
                f"rows {r['empty_rows']} ({'ok' if r['empty_ok'] else 'wrong'})")
            print(f"FAIL {s['bundle']} [{s['path']}] layer {r['layer']} "
                  f"Nq={r['nq']} Nk={r['nk']}: {what}")
    print("### Backward: dQ, dK, dV against float64 (static layers)")
    table(("bundle", "layer", "worst shape", "max rel err dq / dk / dv",
           "check"),
          [(r["bundle"], r["layer"],
            f"{r['worst']['nq']}x{r['worst']['nk']}" if r.get("worst") else "-",
            " / ".join(f"{e:.1e}" for e in r["worst"]["errs"])
            if r.get("worst") else "-",
            (r["status"] + (f" ({r['worst']['error']})"
                            if r.get("worst", {}).get("error") else "")))
           for r in report["backward"]])
    a = report.get("autograd")
    if a:
        print(f"tessera.torch autograd ({a['bundle']} layer {a['layer']}) vs "
              f"the binding's backward: max rel err "
              f"{max(a['errs']):.1e}, {'ok' if a['ok'] else 'FAIL'}"
              + (f" ({a['error']})" if a.get("error") else ""))
        print()
    if report["backward_times"]:
        print("### Backward timings (Nq = Nk = N, batch 1, causal)")
        rows = []
        for r in report["backward_times"]:
            ok = r.get("status") == "ok"
            rows.append((r["case"], r["n"], r["impl"],
                         f"{r['fwd_s'] * 1e3:.3f}" if ok else "-",
                         f"{r['both_s'] * 1e3:.3f}" if ok else "-",
                         f"{(r['both_s'] - r['fwd_s']) / r['fwd_s']:.2f}"
                         if ok and r["fwd_s"] > 0 else "-",
                         r.get("status", "not reached")))
        table(("case", "N", "implementation", "forward ms",
               "forward + backward ms", "backward / forward", "status"),
              rows)
    if report["sampled"]:
        print("### Checks at the timing length (sampled query rows vs float64)")
        table(("case", "path", "N", "rows", "max rel err of O", "check"),
              [(r["case"], r["path"], r["n"], r["rows"], f"{r['err']:.1e}",
                "ok" if r["ok"] else "FAIL") for r in report["sampled"]])
    print("### Timings (Nq = Nk = N, batch 1)")
    rows = []
    for r in report["timings"]:
        s = r.get("s")
        rows.append((r["case"], r["n"], r["impl"], r.get("computes", "-"),
                     f"{s * 1e3:.3f}" if s else "-",
                     f"{r['flops'] / s / 1e12:.4g}" if s else "-",
                     f"{r['vs_tessera']:.2f}" if r.get("vs_tessera") else "-",
                     r.get("reps", "-"),
                     r.get("note", "") if r.get("status") == "ok" else r.get("status", "")))
    table(("case", "N", "implementation", "computes", "ms (median)", "TFLOP/s",
           "time / tessera", "calls", "note"), rows)
    print("TFLOP/s = 4 * head_dim * attended pairs / time: pairs counted "
          "exactly (full tiles' areas plus the partial tiles' allowed pairs "
          "from the layer's program); a row computing 'dense' counts heads * "
          "N * N; softmax FLOPs not counted.")
    print()
    for c in report["cases"]:
        if "pairs" in c:
            print(f"- {c['case']} at {c['n']}: {c['pairs']:,} attended pairs "
                  f"(density {c['density']:.4f})")
    print()
    head, sparse = goals(report)
    print("### Goals")
    table(("headline case", "path", "N", "tessera ms", "peer ms", "peer",
           "tessera speed / peer", "goal", "result"), head)
    table(("case", "path", "N", "tile", "visited tiles", "pair density",
           "tessera ms", "tessera dense ms", "time / dense",
           "goal (visited + 0.05)", "result"), sparse)
    skipped = sum(1 for r in report["timings"] + report["loads"]
                  if r.get("status") == "skipped (budget)")
    skipped += sum(s["skipped"] for s in report["checks"])
    skipped += sum(1 for r in report["backward"] + report["backward_times"]
                   if r.get("status") == "skipped (budget)")
    skipped += sum(1 for c in report["cases"] if c.get("status"))
    met = sum(1 for r in head + sparse if r[-1] == "met")
    print(f"wrong results: {report['failures']}; skipped for the budget: "
          f"{skipped}; goals met: {met} of {len(head) + len(sparse)}")


# ===------------------------------------------------------------------=== #
# --write-reference
# ===------------------------------------------------------------------=== #

def write_reference(dirpath, translate):
    """The gpu-reference pattern file and bundle (see the module doc)."""
    shapes = [HEADLINE]
    for m in sorted(os.listdir(dirpath)):
        mf = os.path.join(dirpath, m, "manifest.json")
        if m == REFERENCE or not os.path.exists(mf):
            continue
        for layer in json.load(open(mf))["layers"]:
            if not layer.get("dynamic_groups") and layer_shape(layer) not in shapes:
                shapes.append(layer_shape(layer))
    lines = ["// Written by bench/gpu_check.py --write-reference: Tessera's dense",
             "// kernel for each static shape of the bundles beside it, and the",
             "// headline dense causal layer.",
             "attn.model @gpu_reference {"]
    layers = [(s, "dense") for s in shapes] + [(HEADLINE, "causal")]
    for i, ((h, hkv, d, dt), pat) in enumerate(layers):
        lines += [f"  attn.layer {i} heads = {h} kv_heads = {hkv} head_dim = {d} dtype = {dt} {{",
                  f"    attn.heads [0 to {h - 1}] = #attn.{pat}", "  }"]
    lines.append("}")
    src = os.path.join(dirpath, REFERENCE + ".mlir")
    with open(src, "w") as f:
        f.write("\n".join(lines) + "\n")
    out = os.path.join(dirpath, REFERENCE)
    return subprocess.run([translate, src, "-o", out]).returncode


# ===------------------------------------------------------------------=== #

def main():
    global torch, tessera
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundles", nargs="*")
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--budget", type=float, default=300.0,
                    help="soft seconds for all phases (default 300)")
    ap.add_argument("--check-len", type=int, default=None,
                    help="default 2048 (cuda), 64 (cpu)")
    ap.add_argument("--time-lens", default=None,
                    help="default 16384 (cuda), 128 (cpu)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="timed calls, at most (default 10 cuda, 2 cpu)")
    ap.add_argument("--cases", default="auto")
    ap.add_argument("--max-cases-per-bundle", type=int, default=2)
    ap.add_argument("--flex", choices=("compile", "eager", "off"), default=None,
                    help="default compile (cuda), eager (cpu)")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--inject-error", action="store_true")
    ap.add_argument("--write-reference", metavar="DIR")
    ap.add_argument("--translate", default="build/bin/attn-translate")
    args = ap.parse_args()
    if args.write_reference:
        return write_reference(args.write_reference, args.translate)
    if not args.bundles:
        ap.error("no bundle directories")
    cuda = args.device == "cuda"
    if args.check_len is None:
        args.check_len = 2048 if cuda else 64
    if args.time_lens is None:
        args.time_lens = "16384" if cuda else "128"
    if args.repeats is None:
        args.repeats = 10 if cuda else 2
    if args.flex is None:
        args.flex = "compile" if cuda else "eager"

    import torch as _torch
    torch = _torch
    import tessera as _tessera
    tessera = _tessera

    def on_term(signum, frame):
        raise Overrun()
    signal.signal(signal.SIGTERM, on_term)

    dev = Device(args.device)
    if cuda and not torch.cuda.is_available():
        print("gpu_check: PyTorch sees no CUDA device", file=sys.stderr)
        return 3
    torch.manual_seed(0)
    if not os.environ.get("TESSERA_CACHE_DIR"):
        os.environ["TESSERA_CACHE_DIR"] = tempfile.mkdtemp(prefix="tessera-cache-")
    report = {"env": environment(dev, args.bundles), "loads": [], "checks": [],
              "sampled": [], "timings": [], "cases": [], "backward": [],
              "backward_times": [], "failures": 0}
    report["env"]["settings"] = (
        f"check length {args.check_len}, timing lengths {args.time_lens}, "
        f"at most {args.repeats} timed calls, FlexAttention {args.flex}, "
        f"budget {args.budget:.0f} s")
    budget = Budget(args.budget)
    cut = False
    try:
        ctx = tessera.Context(args.device)
        cpu_ctx = tessera.Context("cpu")
        budget.start(0.2)
        bundles = phase_load(args, dev, ctx, cpu_ctx, budget, report)
        budget.start(0.2)
        phase_check(args, dev, bundles, budget, report)
        budget.start(0.1)
        phase_backward(args, dev, bundles, budget, report)
        budget.start(0.5)
        phase_time(args, dev, bundles, budget, report)
    except Overrun:
        cut = True
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    print_report(report, cut)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({k: v for k, v in report.items()}, f, indent=1,
                      default=str)
    if report["failures"]:
        return 1
    return 4 if cut else 0


if __name__ == "__main__":
    sys.exit(main())
