#!/usr/bin/env python3
"""The SASS check of the tensor-core kernels (issue 17, item 8).

For every shipped bundle (patterns/*.mlir, emitted with attn-translate as
`make bundles` does) and each architecture, compiles the bundle with NVRTC
the way the runtime does (--gpu-architecture=ARCH and the manifest's
nvrtc_options; runtime/jit/Nvrtc.cpp), disassembles the cubin with nvdisasm
(PyPI's nvidia-cuda-nvdisasm in BUILD/sass-venv: scripts/sass-setup.sh) and
checks every kernel that has tensor-core instructions:

  HMMA (mma.sync) kernels   LDGSTS (cp.async copies K/V), LDSM (ldmatrix
                            fragments), no 16-bit shared loads (LDS.U16,
                            LDS.S16), no local memory (LDL, STL)
  HGMMA (wgmma) kernels     UTMALDG or LDGSTS, no 16-bit shared loads, no
                            local memory

8-bit shared loads (a flag byte) are counted in the summary, not refused.
The backward kernels (tessera_bwd_*, issue 20) are held to every rule but
local memory: they sit at 248-255 registers and spill where a kernel
dispatches over several patterns (docs/backward.md), as attn-nvrtc-check
and ptxas-table.py report without failing; their lines say "spills
(backward, known)" with the counts.

It prints one line per kernel and architecture, then a summary; a failing
kernel's line names the kernel and every rule it breaks.

  scripts/sass-check.py [--bin-dir build/bin] [--build build]
                        [--arch sm_80 --arch sm_90] [--nvdisasm PATH]
                        [--jobs N] [PATTERN.mlir ...]
  scripts/sass-check.py --cu FILE.cu [--arch ...]
      checks a CUDA file instead of bundles (compiled with -std=c++17)

Exit status: 0 every tensor-core kernel passes, 1 a kernel breaks a rule
(or a compile fails), 2 bad arguments or a missing tool.
"""

import argparse
import concurrent.futures
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sasslib  # noqa: E402

ARCHS = ("sm_80", "sm_90")
HALF_LDS = re.compile(r"^LDS(\.\w+)*\.(U16|S16)\b")
BYTE_LDS = re.compile(r"^LDS(\.\w+)*\.(U8|S8)\b")
LOCAL = re.compile(r"^(LDL|STL)\b")


def check_function(fn):
    """(summary, broken rules) of one kernel; summary None when it has no
    tensor-core instruction."""
    ops = [i.op for i in fn.ins]
    count = {}
    for stem in ("HMMA", "HGMMA", "LDGSTS", "LDSM", "UTMALDG"):
        count[stem] = sum(1 for o in ops if o.split(".")[0] == stem)
    half = sum(1 for o in ops if HALF_LDS.match(o))
    byte = sum(1 for o in ops if BYTE_LDS.match(o))
    local = sum(1 for o in ops if LOCAL.match(o))
    if not count["HMMA"] and not count["HGMMA"]:
        return None, []
    broken = []
    if count["HMMA"]:
        if not count["LDGSTS"]:
            broken.append("no LDGSTS (K/V not copied with cp.async)")
        if not count["LDSM"]:
            broken.append("no LDSM (fragments not loaded with ldmatrix)")
    if count["HGMMA"] and not count["UTMALDG"] and not count["LDGSTS"]:
        broken.append("HGMMA without UTMALDG or LDGSTS")
    if half:
        broken.append(f"{half} 16-bit shared loads (LDS.U16/S16)")
    if local:
        broken.append(f"{local} local-memory instructions (LDL/STL)")
    parts = [f"{k} {v}" for k, v in count.items() if v or k in
             ("LDGSTS", "LDSM")]
    parts += [f"16-bit LDS {half}", f"8-bit LDS {byte}", f"LDL/STL {local}"]
    return ", ".join(parts), broken


def check_source(name, source, options, arch, nvdisasm):
    """Lines for one (bundle, arch) and whether all passed."""
    try:
        cubin, _, _ = sasslib.nvrtc_compile(source, arch, options)
    except sasslib.Error as e:
        first = str(e).splitlines()[0]
        return [f"{arch} {name}: FAIL: {first}"], False
    with tempfile.TemporaryDirectory() as tmp:
        text = sasslib.disassemble(nvdisasm, cubin, tmp)
    lines, ok = [], True
    for kernel, fn in sasslib.parse_sass(text).items():
        summary, broken = check_function(fn)
        if summary is None:
            lines.append(f"{arch} {name} {kernel}: no tensor-core "
                         "instructions (not checked)")
        elif (kernel.startswith("tessera_bwd_") and len(broken) == 1
              and "local-memory" in broken[0]):
            lines.append(f"{arch} {name} {kernel}: spills (backward, known) "
                         f"({summary})")
        elif broken:
            ok = False
            lines.append(f"{arch} {name} {kernel}: FAIL: " +
                         "; ".join(broken) + f" ({summary})")
        else:
            lines.append(f"{arch} {name} {kernel}: ok ({summary})")
    return lines, ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("patterns", nargs="*",
                    help="pattern files (default: patterns/*.mlir)")
    ap.add_argument("--bin-dir", default=os.path.join(sasslib.SRC, "build",
                                                      "bin"))
    ap.add_argument("--build", default=None,
                    help="build directory holding sass-venv (default: the "
                    "parent of --bin-dir)")
    ap.add_argument("--arch", action="append",
                    help="sm_XY (repeatable; default sm_80 and sm_90)")
    ap.add_argument("--nvdisasm", default=None)
    ap.add_argument("--cu", help="check this CUDA file instead of bundles")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = ap.parse_args()
    archs = args.arch or list(ARCHS)
    build = args.build or os.path.dirname(os.path.abspath(args.bin_dir))
    try:
        for a in archs:
            if not re.fullmatch(r"sm_\d+a?", a):
                raise sasslib.Error(f"bad --arch {a} (sm_80, sm_90, ...)", 2)
        nvdisasm = sasslib.find_nvdisasm(build, args.nvdisasm)
        sasslib.nvrtc_version()
        sources = []
        if args.cu:
            if args.patterns:
                raise sasslib.Error("--cu takes no pattern files", 2)
            with open(args.cu) as f:
                sources.append((os.path.basename(args.cu), f.read(),
                                ["-std=c++17"]))
        else:
            patterns = args.patterns or sorted(
                os.path.join(sasslib.SRC, "patterns", f)
                for f in os.listdir(os.path.join(sasslib.SRC, "patterns"))
                if f.endswith(".mlir"))
            with tempfile.TemporaryDirectory() as tmp:
                for p in patterns:
                    name = os.path.splitext(os.path.basename(p))[0]
                    src, manifest = sasslib.emit_bundle(
                        args.bin_dir, p, os.path.join(tmp, name))
                    sources.append((name, src,
                                    manifest.get("nvrtc_options",
                                                 ["-std=c++17"])))
    except (sasslib.Error, OSError) as e:
        print(f"sass-check: error: {e}", file=sys.stderr)
        return getattr(e, "code", 2)

    jobs = [(n, s, o, a) for n, s, o in sources for a in archs]
    with concurrent.futures.ProcessPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(check_source, *zip(*jobs),
                                [nvdisasm] * len(jobs)))
    checked = failed = 0
    for lines, ok in results:
        for line in lines:
            print(line)
            if ": ok (" in line or ": FAIL" in line:
                checked += 1
            if ": FAIL" in line:
                failed += 1
    if failed:
        print(f"sass-check: {failed} of {checked} tensor-core kernels break "
              "a rule")
        return 1
    print(f"sass-check: {checked} tensor-core kernels pass "
          f"({', '.join(archs)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
