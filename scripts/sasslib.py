"""Shared pieces of the SASS scripts: a bundle compiled the way the runtime
compiles it, and its disassembly.

  * nvrtc_compile(source, arch, options): NVRTC through ctypes with the
    runtime's options (runtime/jit/Nvrtc.cpp: --gpu-architecture=ARCH, then
    the manifest's nvrtc_options, "-std=c++17" today); returns the cubin,
    NVRTC's version and each kernel's ptxas figures (--ptxas-options=-v
    only adds the report, the code is the same).
  * find_nvdisasm(build_dir, given): nvdisasm from PyPI's
    nvidia-cuda-nvdisasm in BUILD/sass-venv (scripts/sass-setup.sh installs
    it), $TESSERA_NVDISASM, PATH or the CUDA toolkit.
  * disassemble(nvdisasm, cubin, lines): `nvdisasm -c` text; with
    lines=True also the inlined source lines (`-gi`; compile with
    -lineinfo, which does not change the code).
  * parse_sass(text): kernel -> Function (instructions, labels).
  * emit_bundle(bin_dir, pattern, out_dir): attn-translate's bundle.
Used by scripts/sass-check.py, scripts/sass-counts.py and
bench/sass_index_share.py.
"""

import ctypes
import glob
import json
import os
import re
import shutil
import subprocess

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Error(Exception):
    """A one-line error; `code` is the exit status the caller should use."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


_NVRTC = None


def _nvrtc():
    global _NVRTC
    if _NVRTC is not None:
        return _NVRTC
    names = [os.environ.get("TESSERA_NVRTC", "")] + sorted(
        glob.glob("/usr/local/cuda/lib64/libnvrtc.so*"))
    for name in [n for n in names if n] + ["libnvrtc.so"]:
        try:
            _NVRTC = ctypes.CDLL(name)
            return _NVRTC
        except OSError:
            continue
    raise Error("cannot load libnvrtc (set TESSERA_NVRTC to its path)", 2)


def nvrtc_version():
    lib = _nvrtc()
    major, minor = ctypes.c_int(), ctypes.c_int()
    lib.nvrtcVersion(ctypes.byref(major), ctypes.byref(minor))
    return f"{major.value}.{minor.value}"


def parse_ptxas(log):
    """kernel -> {regs, smem, stack, spills} from a --ptxas-options=-v log."""
    res, cur = {}, None
    for line in log.splitlines():
        m = re.search(r"Compiling entry function '(\w+)'", line)
        if m:
            cur = m.group(1)
            res[cur] = dict(regs=0, smem=0, stack=0, spills=0)
            continue
        if not cur:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, "
                      r"(\d+) bytes spill loads", line)
        if m:
            res[cur]["stack"] = int(m.group(1))
            res[cur]["spills"] = int(m.group(2)) + int(m.group(3))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            res[cur]["regs"] = int(m.group(1))
            s = re.search(r"(\d+) bytes smem", line)
            res[cur]["smem"] = int(s.group(1)) if s else 0
    return res


def nvrtc_compile(source, arch, options=("-std=c++17",), extra=()):
    """(cubin bytes, NVRTC version, ptxas figures per kernel) of `source`
    compiled as the runtime compiles it for `arch`; `extra` options are
    added after the runtime's (e.g. -lineinfo)."""
    lib = _nvrtc()
    prog = ctypes.c_void_p()
    if lib.nvrtcCreateProgram(ctypes.byref(prog), source.encode(),
                              b"bundle.cu", 0, None, None):
        raise Error("nvrtcCreateProgram failed")
    opts = [f"--gpu-architecture={arch}".encode()] + \
        [o.encode() for o in options] + [b"--ptxas-options=-v"] + \
        [o.encode() for o in extra]
    rc = lib.nvrtcCompileProgram(prog, len(opts),
                                 (ctypes.c_char_p * len(opts))(*opts))
    size = ctypes.c_size_t()
    lib.nvrtcGetProgramLogSize(prog, ctypes.byref(size))
    log = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetProgramLog(prog, log)
    log = log.value.decode(errors="replace")
    if rc:
        lib.nvrtcDestroyProgram(ctypes.byref(prog))
        raise Error(f"NVRTC could not compile for {arch}:\n{log}")
    lib.nvrtcGetCUBINSize(prog, ctypes.byref(size))
    cubin = ctypes.create_string_buffer(size.value)
    lib.nvrtcGetCUBIN(prog, cubin)
    lib.nvrtcDestroyProgram(ctypes.byref(prog))
    return cubin.raw, nvrtc_version(), parse_ptxas(log)


def find_nvdisasm(build_dir=None, given=None):
    """The path of nvdisasm, or Error (exit 2) saying how to install it."""
    if given:
        if os.path.isfile(given) and os.access(given, os.X_OK):
            return given
        raise Error(f"no nvdisasm at {given}", 2)
    build_dir = build_dir or os.path.join(SRC, "build")
    cands = [os.environ.get("TESSERA_NVDISASM")]
    cands += sorted(glob.glob(os.path.join(
        build_dir, "sass-venv", "lib", "python3*", "site-packages", "nvidia",
        "cu*", "bin", "nvdisasm")))
    cands += [shutil.which("nvdisasm"), "/usr/local/cuda/bin/nvdisasm"]
    for c in cands:
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise Error(f"no nvdisasm in {build_dir}/sass-venv: run "
                f"scripts/sass-setup.sh {build_dir} (pip installs "
                "nvidia-cuda-nvdisasm there), or pass --nvdisasm PATH", 2)


def nvdisasm_version(nvdisasm):
    run = subprocess.run([nvdisasm, "--version"], capture_output=True,
                         text=True)
    m = re.search(r"V(\d+\.\d+\.\d+)", run.stdout)
    return m.group(1) if m else "unknown"


def disassemble(nvdisasm, cubin, tmp_dir, lines=False):
    path = os.path.join(tmp_dir, f"k{os.getpid()}_{id(cubin)}.cubin")
    with open(path, "wb") as f:
        f.write(cubin)
    cmd = [nvdisasm, "-c"] + (["-gi"] if lines else []) + [path]
    run = subprocess.run(cmd, capture_output=True, text=True)
    os.unlink(path)
    if run.returncode != 0:
        raise Error(f"nvdisasm failed: {run.stderr.strip()[-300:]}")
    return run.stdout


class Instr:
    """One SASS instruction: `op` the opcode with its modifiers
    (LDG.E.128), `stem` without them (LDG), `pred` the guard (@!P0, or ''),
    `args` the operand text, `lines` the source lines of its inline chain,
    innermost first (empty without -gi)."""
    __slots__ = ("addr", "pred", "op", "stem", "args", "lines")

    def __init__(self, addr, pred, op, args, lines):
        self.addr, self.pred, self.op, self.args = addr, pred, op, args
        self.stem = op.split(".")[0]
        self.lines = lines

    def __repr__(self):
        return f"/*{self.addr:04x}*/ {self.pred} {self.op} {self.args}"


class Function:
    def __init__(self, name):
        self.name = name
        self.ins = []
        self.labels = {}  # label -> index of the instruction it names


_INS = re.compile(r"^\s*/\*([0-9a-f]{4,})\*/\s+(@!?U?P[T0-9]+\s+)?"
                  r"([A-Z0-9_][\w.]*)\s*(.*?)\s*;")
_LINE = re.compile(r'^\s*//## File "[^"]*", line (\d+)'
                   r'(?: inlined at "[^"]*", line (\d+))?')


def parse_sass(text):
    """kernel name -> Function, in the order nvdisasm prints them."""
    out, cur, chain, fresh = {}, None, (), False
    for line in text.splitlines():
        m = re.match(r"^\.text\.(\S+):", line)
        if m:
            cur = out.setdefault(m.group(1), Function(m.group(1)))
            chain, fresh = (), False
            continue
        if cur is None:
            continue
        m = _LINE.match(line)
        if m:
            # A chain is printed innermost first, one frame a line
            # ("line A inlined at line B", "line B inlined at line C", ...,
            # "line Z"); a new chain starts after an instruction.
            if not fresh:
                chain, fresh = (int(m.group(1)),), True
            if m.group(2):
                chain += (int(m.group(2)),)
            continue
        m = re.match(r"^(\.L_x_\d+):", line)
        if m:
            cur.labels[m.group(1)] = len(cur.ins)
            continue
        m = _INS.match(line)
        if m:
            fresh = False
            pred = (m.group(2) or "").strip()
            cur.ins.append(Instr(int(m.group(1), 16), pred, m.group(3),
                                 m.group(4), chain))
    return out


def emit_bundle(bin_dir, pattern, out_dir):
    """Runs attn-translate on `pattern` (a path) into out_dir; returns
    (bundle source, manifest dict)."""
    tool = os.path.join(bin_dir, "attn-translate")
    if not os.access(tool, os.X_OK):
        raise Error(f"no attn-translate in {bin_dir} (build it, or pass "
                    "--bin-dir)", 2)
    run = subprocess.run([tool, pattern, "-o", out_dir], capture_output=True,
                         text=True)
    if run.returncode != 0:
        tail = run.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise Error(f"attn-translate {pattern} failed: {tail[0]}")
    with open(os.path.join(out_dir, "bundle.cu")) as f:
        source = f.read()
    with open(os.path.join(out_dir, "manifest.json")) as f:
        manifest = json.load(f)
    return source, manifest
