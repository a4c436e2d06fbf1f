#!@TESSERA_PYTHON_EXECUTABLE@
"""attn-calibrate: the measurements the cost model and --attn-select need.

  attn-calibrate synth -o sample.npz [--layers 2 --heads 8 --kv-heads 2
                 --head-dim 64 --seq-len 4096 --kind llm|video --seed 0]
      Synthetic Q/K/V with planted structure (sinks, RoPE-like locality,
      vertical key columns, periodic diagonals, clusters, diffuse heads).

  attn-calibrate accuracy sample.npz -o calib.json [--candidates FILE]
                 [--reference PATTERN]
      Runs every candidate pattern (default: the static families over a grid
      scaled to the length) and the reference with Tessera's CPU executor on
      each layer's Q/K/V and writes, per head, the recall (mean share of the
      reference's softmax mass the candidate keeps, exp(lse - lse_ref) per
      row) and the output error (||O - O_ref|| / ||O_ref||), plus each
      head's contribution (its share of the layer output's squared norm).

  attn-calibrate target -o cpu.json
      Times the CPU executor (on all hardware threads, as the runtime runs) on layers whose tiles are all full, all partial
      or mixed, at several lengths, and fits the target's tile costs (least
      squares over the measured runs).

Sample files (.npz, a regular file): q<L>, k<L>, v<L> real arrays [N, H, D],
[N, Hkv, D] for layers L = 0, 1, ... (N <= 2^20, H <= 4096, Hkv dividing H,
D 64 or 128, at most 16 GiB an array, finite in float32); an optional
'meta' JSON object string (at most 1 MiB, nested at most 32 deep). Outputs
are written to exactly the path given, as standard JSON (a result that is
not finite is an error). Formats and limits: docs/cost-model.md. Progress
goes to stderr on a terminal.
"""
import argparse
import datetime
import json
import math
import os
import platform
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
# Where the build put this script's neighbours (attn-translate) and the
# source tree's Python package; filled in by CMake for build/bin.
TRANSLATE_DIR = "@TESSERA_TOOLS_DIR@"
PYTHON_DIR = "@TESSERA_PYTHON_DIR@"


class Error(Exception):
    pass


# The runtime's exception class, once the tessera package is imported.
RuntimeFailure = Error


def import_tessera():
    try:
        import tessera  # noqa: F401 (installed with pip install ./python)
    except ImportError:
        if PYTHON_DIR and not PYTHON_DIR.startswith("@"):
            sys.path.insert(0, PYTHON_DIR)
        import tessera  # noqa: F811
    global RuntimeFailure
    RuntimeFailure = tessera.TesseraError
    return tessera


def find_translate(explicit):
    for c in (explicit, os.path.join(HERE, "attn-translate"),
              os.path.join(TRANSLATE_DIR, "attn-translate")
              if not TRANSLATE_DIR.startswith("@") else None,
              shutil.which("attn-translate")):
        if c and os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    raise Error("cannot find attn-translate; pass --translate PATH")


def progress_enabled():
    env = os.environ.get("TESSERA_PROGRESS")
    return env == "1" or (env != "0" and sys.stderr.isatty())


class Progress:
    def __init__(self, what, total):
        self.what, self.total = what, total
        self.on = progress_enabled()
        self.lines = not sys.stderr.isatty()
        self.shown = False

    def step(self, done, detail=""):
        if not self.on:
            return
        pct = 100.0 * done / self.total if self.total else 100.0
        text = f"[{self.what}] {done}/{self.total} ({pct:.0f}%) {detail}"
        if self.lines:
            print(text.rstrip(), file=sys.stderr, flush=True)
        else:
            print("\r\033[K" + text, end="", file=sys.stderr, flush=True)
        self.shown = True

    def finish(self):
        if self.on and self.shown and not self.lines:
            print("\r\033[K", end="", file=sys.stderr, flush=True)


#===----------------------------------------------------------------------===#
# Synthetic Q/K/V
#===----------------------------------------------------------------------===#

LLM_KINDS = ["sink_local", "local", "vertical", "diffuse", "cluster",
             "sink_local", "local", "sink_local"]
VIDEO_KINDS = ["periodic", "local", "vertical", "diffuse", "cluster",
               "periodic", "local", "periodic"]


def synth(args):
    import numpy as np
    if not (1 <= args.layers <= 64 and 1 <= args.heads <= 256 and
            1 <= args.kv_heads <= args.heads and
            args.heads % args.kv_heads == 0 and
            args.head_dim in HEAD_DIMS and 64 <= args.len <= 65536 and
            0 <= args.seed < 1 << 63):
        raise Error("synth: layers in [1, 64], heads in [1, 256], kv-heads "
                    "dividing heads, head-dim 64 or 128, seq-len in "
                    "[64, 65536], seed in [0, 2^63)")
    rng = np.random.default_rng(args.seed)
    n, h, hkv, d = args.len, args.heads, args.kv_heads, args.head_dim
    kinds_cycle = LLM_KINDS if args.kind == "llm" else VIDEO_KINDS
    frame = max(64, n // 16)  # video: tokens per frame
    pos = np.arange(n, dtype=np.float64)
    arrays, meta = {}, {"kind": args.kind, "seed": args.seed,
                        "causal": args.kind == "llm", "frame": frame,
                        "layers": []}
    for layer in range(args.layers):
        q = np.empty((n, h, d), np.float32)
        k = np.empty((n, hkv, d), np.float32)
        v = rng.standard_normal((n, hkv, d)).astype(np.float32)
        kinds = []
        for g in range(hkv):
            kind = kinds_cycle[(layer * hkv + g) % len(kinds_cycle)]
            kinds.append(kind)
            # Locality (RoPE-like): q_i . k_j = sum_f cos(w_f (i - j)),
            # peaked at i = j; `span` sets how far it reaches.
            half = d // 2
            span = {"local": n / 32, "sink_local": n / 64,
                    "vertical": n / 16}.get(kind, n / 32)
            if kind == "periodic":
                # Peaks at i - j = 0 mod frame, each of width ~frame/16.
                w = 2 * np.pi * rng.integers(1, 17, half) / frame
            else:
                w = np.abs(rng.standard_normal(half)) / span
            # Normalised so the peak logit is strength^2.
            base_q = np.concatenate([np.cos(np.outer(pos, w)),
                                     np.sin(np.outer(pos, w))], 1) / \
                math.sqrt(half)
            base_k = base_q.copy()
            strength = {"diffuse": 0.0, "cluster": 0.0}.get(kind, 3.0)
            bq, bk = strength * base_q, strength * base_k
            if kind == "cluster":
                cents = rng.standard_normal((8, d)) * (3.0 / math.sqrt(d))
                assign = rng.integers(0, 8, n)
                bq, bk = cents[assign], cents[assign]
            if kind in ("sink_local", "vertical"):
                # A direction every query shares and a few keys carry.
                e = rng.standard_normal(d)
                e /= np.linalg.norm(e)
                cols = np.arange(4) if kind == "sink_local" else \
                    np.sort(rng.choice(n, 16, replace=False))
                bq = bq + 1.0 * e
                bk = bk.copy()
                bk[cols] += (8.0 if kind == "sink_local" else 7.0) * e
                if kind == "vertical":
                    meta.setdefault("vertical_columns", {})[
                        f"{layer}.{g}"] = cols.tolist()
            noise = 0.15
            k[:, g] = bk + noise * rng.standard_normal((n, d))
            for j in range(h // hkv):
                q[:, g * (h // hkv) + j] = (
                    bq + noise * rng.standard_normal((n, d)))
        # Attention scales scores by 1/sqrt(d): pre-scale so that q . k /
        # sqrt(d) is the logit planted above.
        scale = math.sqrt(math.sqrt(d))
        arrays[f"q{layer}"] = q * scale
        arrays[f"k{layer}"] = k * scale
        arrays[f"v{layer}"] = v
        meta["layers"].append({"kv_head_kinds": kinds})
    arrays["meta"] = np.array(json.dumps(meta))
    # Into memory first: numpy appends '.npz' to a file name without it,
    # and a zip writer that fails half-way complains again when collected.
    import io
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_output(args.output, lambda f: f.write(buf.getbuffer()))
    print(f"wrote {args.output}: {args.layers} layers of {h} heads "
          f"({hkv} kv heads), head_dim {d}, {n} tokens, {args.kind}")


#===----------------------------------------------------------------------===#
# Accuracy calibration
#===----------------------------------------------------------------------===#

def round64(x):
    return max(64, int(round(x / 64.0)) * 64)


def default_candidates(n, causal, frame):
    """The static families over a grid scaled to the length N."""
    widths = sorted({round64(n / f) for f in (64, 32, 16, 8, 4)})
    out = []
    if causal:
        for w in widths:
            out.append(f"#attn.window<before = {w}>")
            for s in (4, 64):
                out.append(f"#attn.a_shape<sink = {s}, before = {w}>")
        for w in widths[:3]:
            out.append("#attn.intersect<#attn.causal, #attn.union<"
                       f"#attn.a_shape<sink = 64, before = {w}>, "
                       f"#attn.vertical_stripe<period = {round64(n / 8)}, "
                       "width = 16>>>")
        out.append("#attn.causal")
    else:
        for w in widths:
            out.append(f"#attn.window<before = {w}, after = {w}>")
            out.append(f"#attn.union<#attn.window<before = {w}, after = {w}>,"
                       " #attn.vertical_stripe<ranges = [0, 64]>>")
        for width in (32, 64, 128):
            out.append(f"#attn.multi_diagonal<stride = {frame}, "
                       f"width = {width}>")
            out.append(f"#attn.grid<stride = {frame}, vertical_width = 64, "
                       f"slash_width = {width}>")
        out.append("#attn.dense")
    return out


def build_bundle(translate, patterns, heads, kv_heads, head_dim, workdir):
    """A bundle with one layer per pattern (every head the same)."""
    for p in patterns:
        # One pattern a layer: text that could close the layer (or open
        # another) is not a pattern.
        if any(c in p for c in "{}\n\r"):
            raise Error(f"{p!r} is not one attn pattern (it holds a brace "
                        "or a line break)")
    lines = ["attn.model @calibration {"]
    for i, p in enumerate(patterns):
        lines.append(f"  attn.layer {i} heads = {heads} kv_heads = {kv_heads}"
                     f" head_dim = {head_dim} dtype = f16 {{")
        lines.append(f"    attn.heads [0 to {heads - 1}] = {p}")
        lines.append("  }")
    lines.append("}")
    src = os.path.join(workdir, "candidates.mlir")
    with open(src, "w") as f:
        f.write("\n".join(lines) + "\n")
    out = os.path.join(workdir, "bundle")
    r = subprocess.run([translate, src, "-o", out], stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        # The first error, on one line, with the pattern of its layer (layer
        # i spans lines 2 + 3 i .. 4 + 3 i of the file).
        import re
        first = next((x for x in r.stdout.splitlines() if "error:" in x),
                     r.stdout.strip().splitlines()[0] if r.stdout.strip()
                     else f"exit status {r.returncode}")
        m = re.match(r".*candidates\.mlir:(\d+):\d+: error: (.*)", first)
        if m and 0 <= (int(m.group(1)) - 2) // 3 < len(patterns):
            first = (f"'{patterns[(int(m.group(1)) - 2) // 3]}': "
                     f"{m.group(2)}")
        raise Error("attn-translate rejected the candidates: " + first)
    return out


# Limits on what a sample may declare (docs/cost-model.md): the arrays are
# read only after their headers fit these and the bytes the file holds.
MAX_TOKENS = 1 << 20
MAX_HEADS = 4096           # as --attn-select's calibration files
HEAD_DIMS = (64, 128)      # what the bundle's kernels support
MAX_ARRAY_BYTES = 1 << 34  # 16 GiB an array
MAX_META_BYTES = 1 << 20
MAX_JSON_DEPTH = 32        # as the runtime's manifests
MAX_LIST_BYTES = 1 << 20   # a candidate list
MAX_CANDIDATES = 256       # as --attn-select's calibration files


def regular_file(path, what):
    """Refuses what is not a regular file (a FIFO would block, a device
    would be read without end) before it is opened."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise Error(f"{path}: cannot read the {what}: {e.strerror}")
    if not stat.S_ISREG(st.st_mode):
        raise Error(f"{path}: the {what} is not a regular file")
    return st.st_size


def json_depth(text, limit):
    """The nesting depth of arrays and objects in JSON text, strings
    skipped; stops counting past `limit` (as the runtime's manifest
    reader: the parser recurses)."""
    depth = deepest = 0
    in_string = escaped = False
    for c in text:
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif c in "]}":
            depth -= 1
    return deepest


def read_member(zf, path, name, max_bytes):
    """Array `name` of the .npz `zf`: its header checked (a numeric dtype,
    no more bytes than `max_bytes` and than the member holds) before its
    data is read."""
    import numpy as np
    fmt = np.lib.format
    info = zf.getinfo(name + ".npy")
    try:
        with zf.open(info) as f:
            version = fmt.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = fmt.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = fmt.read_array_header_2_0(f)
            else:
                raise ValueError(f"unsupported .npy version {version}")
            if dtype.hasobject:
                raise Error(f"{path}: {name} holds Python objects")
            count = 1
            for x in shape:
                count *= x
            size = count * dtype.itemsize
            if size > max_bytes:
                raise Error(f"{path}: {name} declares shape {shape} of "
                            f"{dtype} ({size} bytes), more than {max_bytes}")
            if size > info.file_size:
                raise Error(f"{path}: {name} declares shape {shape} of "
                            f"{dtype} ({size} bytes) but the file holds "
                            f"{info.file_size}")
            data = f.read(size)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile,
            NotImplementedError, RuntimeError) as e:
        raise Error(f"{path}: {name} is not a readable .npy array ({e})")
    if len(data) != size:
        raise Error(f"{path}: {name} is truncated ({len(data)} of {size} "
                    "bytes)")
    return np.frombuffer(data, dtype=dtype).reshape(
        shape, order="F" if fortran else "C")


def read_meta(zf, path):
    """The sample's optional 'meta' JSON object, bounded in size and depth
    and with its fields typed."""
    import numpy as np
    if "meta.npy" not in zf.namelist():
        return {}
    m = read_member(zf, path, "meta", MAX_META_BYTES)
    if m.shape != () or m.dtype.kind not in "US":
        raise Error(f"{path}: 'meta' must be one string (got {m.dtype} "
                    f"of shape {m.shape})")
    text = m[()]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError:
            raise Error(f"{path}: 'meta' is not UTF-8")
    text = str(text)
    if json_depth(text, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise Error(f"{path}: 'meta' nests arrays and objects more than "
                    f"{MAX_JSON_DEPTH} deep")
    try:
        meta = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise Error(f"{path}: 'meta' is not JSON ({e})")
    if not isinstance(meta, dict):
        raise Error(f"{path}: 'meta' is not a JSON object")
    if "causal" in meta and not isinstance(meta["causal"], bool):
        raise Error(f"{path}: 'meta' field 'causal' must be true or false")
    frame = meta.get("frame")
    if frame is not None and (isinstance(frame, bool) or
                              not isinstance(frame, int) or
                              not 1 <= frame <= 1 << 40):
        raise Error(f"{path}: 'meta' field 'frame' must be an integer in "
                    "[1, 2^40]")
    for key in ("kind", "seed"):
        if isinstance(meta.get(key), (dict, list)):
            raise Error(f"{path}: 'meta' field '{key}' must be a scalar")
    return meta


def load_sample(path):
    import numpy as np
    regular_file(path, "sample")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError, ValueError) as e:
        raise Error(f"{path}: not a readable .npz file ({e})")
    with zf:
        names = set(zf.namelist())
        meta = read_meta(zf, path)
        layers = []
        i = 0
        while f"q{i}.npy" in names:
            if f"k{i}.npy" not in names or f"v{i}.npy" not in names:
                raise Error(f"{path}: layer {i} has q{i} but lacks k{i} or "
                            f"v{i}")
            arrays = []
            for x in "qkv":
                a = read_member(zf, path, f"{x}{i}", MAX_ARRAY_BYTES)
                if a.ndim != 3:
                    raise Error(f"{path}: {x}{i} must be [N, heads, "
                                f"head_dim], got shape {a.shape}")
                if a.dtype.kind not in "fiu":
                    raise Error(f"{path}: {x}{i} holds {a.dtype}, not real "
                                "numbers")
                arrays.append(a)
            q, k, v = arrays
            n, h, d = q.shape
            hkv = k.shape[1]
            if not (1 <= n <= MAX_TOKENS and 1 <= h <= MAX_HEADS and
                    1 <= hkv <= h and h % hkv == 0 and d in HEAD_DIMS) or \
                    k.shape != (n, hkv, d) or v.shape != k.shape:
                raise Error(
                    f"{path}: layer {i}: q {q.shape}, k {k.shape}, v "
                    f"{v.shape} do not fit: q is [N, heads, head_dim], k "
                    f"and v [N, kv_heads, head_dim] with N in [1, "
                    f"{MAX_TOKENS}], heads in [1, {MAX_HEADS}], kv heads "
                    f"dividing heads, head_dim "
                    f"{' or '.join(map(str, HEAD_DIMS))}")
            out = []
            for x, a in zip("qkv", arrays):
                with np.errstate(over="ignore", invalid="ignore"):
                    a = a.astype(np.float32)
                if not np.isfinite(a).all():
                    raise Error(f"{path}: {x}{i} holds NaN or infinity (in "
                                "float32)")
                out.append(a)
            layers.append(tuple(out))
            i += 1
    if not layers:
        raise Error(f"{path}: holds no q0/k0/v0 arrays")
    shapes = {(q.shape[0], q.shape[1], k.shape[1], q.shape[2])
              for q, k, _ in layers}
    if len(shapes) != 1:
        raise Error(f"{path}: layers differ in shape: {sorted(shapes)}")
    return layers, meta


def read_candidates(path):
    """One pattern per line, '//' comments; a bounded regular file."""
    size = regular_file(path, "candidate list")
    if size > MAX_LIST_BYTES:
        raise Error(f"{path}: the candidate list is larger than "
                    f"{MAX_LIST_BYTES} bytes")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_LIST_BYTES + 1)
    except (OSError, UnicodeDecodeError) as e:
        raise Error(f"cannot read the candidate list {path}: {e}")
    cands = [x.strip() for x in text.splitlines() if x.strip() and
             not x.lstrip().startswith("//")]
    if not cands:
        raise Error(f"{path} lists no candidate")
    if len(cands) > MAX_CANDIDATES:
        raise Error(f"{path} lists {len(cands)} candidates, more than "
                    f"{MAX_CANDIDATES} (--attn-select's limit)")
    return cands


def write_output(path, write):
    """Runs write(file) on `path` opened for binary writing; a failure is an
    Error naming the path."""
    try:
        with open(path, "wb") as f:
            write(f)
    except OSError as e:
        raise Error(f"cannot write {path}: {e.strerror or e}")


def write_json(path, value):
    """Standard JSON only: a NaN or an infinity is an error, not 'NaN'."""
    try:
        text = json.dumps(value, indent=1, allow_nan=False) + "\n"
    except ValueError:
        raise Error(f"{path}: a result is not finite; nothing written")
    write_output(path, lambda f: f.write(text.encode()))


def sig6(x):
    """x with 6 significant digits (small shares keep their precision)."""
    return float(f"{x:.6g}")


def accuracy(args):
    import numpy as np
    tessera = import_tessera()
    layers, meta = load_sample(args.sample)
    n, h, hkv, d = layers[0][0].shape[0], layers[0][0].shape[1], \
        layers[0][1].shape[1], layers[0][0].shape[2]
    causal = meta.get("causal", True)
    reference = args.reference or ("#attn.causal" if causal else "#attn.dense")
    if args.candidates:
        cands = read_candidates(args.candidates)
    else:
        cands = default_candidates(n, causal, int(meta.get("frame", max(1, n // 16))))
    if len(set(cands)) != len(cands):
        raise Error("the candidate list names a pattern twice")
    translate = find_translate(args.translate)
    cands = [c for c in cands if c != reference]
    # Layer 0: the reference; then each candidate; then each candidate
    # intersected with the reference, whose log-sum-exp against the
    # reference's is exactly the reference's softmax mass the candidate
    # keeps (also for candidates that allow keys the reference does not).
    patterns = [reference] + cands + \
        [f"#attn.intersect<{c}, {reference}>" for c in cands]
    m = len(cands)

    def finite(o, lse, li, p):
        # Scores that overflow float32 (|q . k| scale near 3e38) make the
        # softmax NaN: refuse rather than record it.
        if not np.isfinite(o).all() or np.isnan(lse).any() or \
                (lse == np.inf).any():
            raise Error(f"layer {li}: the output of {p} is not finite (the "
                        "scores q . k / sqrt(head_dim) overflow float32); "
                        "scale Q and K down")

    with tempfile.TemporaryDirectory() as work:
        bundle_dir = build_bundle(translate, patterns, h, hkv, d, work)
        bundle = tessera.Context("cpu").load(bundle_dir)
        out_layers = []
        progress = Progress("attn-calibrate accuracy",
                            len(layers) * (m + 1))
        for li, (q, k, v) in enumerate(layers):
            qb, kb, vb = q[None], k[None], v[None]
            o_ref, lse_ref = bundle.attention(0, qb, kb, vb)
            finite(o_ref, lse_ref, li, f"the reference {reference}")
            o_ref, lse_ref = o_ref[0].astype(np.float64), lse_ref[0]
            sq = np.array([float(np.sum(o_ref[:, x] ** 2)) for x in range(h)])
            norms = np.sqrt(sq)
            total = float(sq.sum())
            # A reference whose output is zero (it allows no key, or V is
            # zero there) has nothing to share: every contribution is 0.
            contribution = sq / total if total > 0 else np.zeros(h)
            rows = np.isfinite(lse_ref)                  # [H, N]
            cand_out = []
            for ci, p in enumerate(patterns[:m + 1]):
                progress.step(li * (m + 1) + ci, f"layer {li}: {p}")
                if ci == 0:
                    o, lse = o_ref, lse_ref
                else:
                    o, _ = bundle.attention(ci, qb, kb, vb, lse=False)
                    _, lse = bundle.attention(m + ci, qb, kb, vb)
                    finite(o, lse, li, p)
                    o, lse = o[0].astype(np.float64), lse[0]
                with np.errstate(over="ignore", invalid="ignore"):
                    kept = np.where(rows, np.exp(np.minimum(
                        lse - np.where(rows, lse_ref, 0), 0.0)), 0.0)
                # A row where the reference allows no key has no mass to
                # keep: recall 1 (a head with no such row: 1).
                recall = [float(kept[x][rows[x]].mean()) if rows[x].any()
                          else 1.0 for x in range(h)]
                diff = np.array([float(np.sum((o[:, x] - o_ref[:, x]) ** 2))
                                 for x in range(h)])
                # Relative error; against a zero reference output it is 0
                # when the candidate's output is zero too and 1 otherwise
                # (all of it is error). The share of the layer's squared
                # error, ||O_C,h - O_R,h||^2 / sum_g ||O_R,g||^2, predicts
                # the layer error of any mix of candidates; with a zero
                # layer reference a head with output counts 1.
                error = [float(np.sqrt(diff[x]) / norms[x]) if norms[x] > 0
                         else float(diff[x] > 0) for x in range(h)]
                share = diff / total if total > 0 else \
                    (diff > 0).astype(np.float64)
                cand_out.append({"pattern": p,
                                 "recall": [sig6(x) for x in recall],
                                 "error": [sig6(x) for x in error],
                                 "error_share": [sig6(x) for x in share]})
            out_layers.append({"index": li, "num_heads": h,
                               "contribution": [sig6(float(x))
                                                for x in contribution],
                               "candidates": cand_out})
        progress.finish()
    result = {"format": "tessera-calibration", "version": 1,
              "source": f"attn-calibrate accuracy {os.path.basename(args.sample)}"
                        f" ({meta.get('kind', 'sample')}, seed "
                        f"{meta.get('seed', '-')})",
              "seq_len": n, "heads": h, "kv_heads": hkv, "head_dim": d,
              "reference": reference, "layers": out_layers}
    write_json(args.output, result)
    print(f"wrote {args.output}: {len(layers)} layers x {m + 1} "
          f"candidates (reference {reference}) at {n} tokens")


#===----------------------------------------------------------------------===#
# Target calibration (this CPU)
#===----------------------------------------------------------------------===#

TARGET_PATTERNS = [
    "#attn.dense",
    "#attn.causal",
    "#attn.window<before = 1024>",
    "#attn.multi_diagonal<stride = 256, width = 16>",
    "#attn.vertical_stripe<period = 512, width = 8>",
    "#attn.a_shape<sink = 64, before = 2048>",
]


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def target(args):
    import numpy as np
    tessera = import_tessera()
    translate = find_translate(args.translate)
    threads = os.cpu_count() or 1  # the runtime uses every hardware thread
    if not (1 <= args.heads <= 64 and args.repeats >= 1 and
            all(64 <= n <= 65536 for n in args.lengths)):
        raise Error("target: heads in [1, 64], repeats >= 1, lengths in "
                    "[64, 65536]")
    return _target_fit(args, tessera, translate, threads, args.heads,
                       args.lengths, np.random.default_rng(0))


def _time_layers(tessera, translate, heads, d, lengths, repeats, rng,
                 progress, step0):
    """(items, full, partial, seconds, pattern, len) for every pattern and
    length at head_dim d, and the launch time (a one-tile layer)."""
    import numpy as np
    rows = []
    with tempfile.TemporaryDirectory() as work:
        bundle_dir = build_bundle(translate, TARGET_PATTERNS, heads, heads, d,
                                  work)
        bundle = tessera.Context("cpu").load(bundle_dir)
        step = step0
        for n in lengths:
            q, k, v = (rng.standard_normal((1, n, heads, d)).astype(
                np.float32) for _ in range(3))
            for li, p in enumerate(TARGET_PATTERNS):
                progress.step(step, f"{p} at {n}, head_dim {d}")
                step += 1
                times = []
                for _ in range(repeats):
                    t = time.perf_counter()
                    bundle.attention(li, q, k, v, lse=False)
                    times.append(time.perf_counter() - t)
                cls = bundle.tile_classes(li, n, n)
                rows.append((heads * ((n + 63) // 64), int((cls == 2).sum()),
                             int((cls == 1).sum()), float(np.median(times)),
                             p, n))
        q1 = rng.standard_normal((1, 64, heads, d)).astype(np.float32)
        launch = []
        for _ in range(20):
            t = time.perf_counter()
            bundle.attention(0, q1, q1, q1, lse=False)
            launch.append(time.perf_counter() - t)
    return rows, float(np.min(launch))


def _target_fit(args, tessera, translate, threads, heads, lengths, rng):
    import numpy as np
    total = 2 * len(lengths) * len(TARGET_PATTERNS)
    progress = Progress("attn-calibrate target", total)
    rows, launch = _time_layers(tessera, translate, heads, 128, lengths,
                                args.repeats, rng, progress, 0)
    rows64, _ = _time_layers(tessera, translate, heads, 64, lengths,
                             args.repeats, rng, progress, total // 2)
    progress.finish()
    # time * threads = launch * threads + items * row + full * f + partial * p
    # at head_dim 128; relative least squares (every run weighs the same).
    # The launch (thread start-up, buffers) is fitted too, starting from the
    # one-tile layer's time.
    def system(rs):
        a = np.array([[threads, r[0], r[1], r[2]] for r in rs],
                     dtype=np.float64)
        b = np.array([r[3] * threads for r in rs])
        w = 1.0 / np.maximum(np.array([r[3] for r in rs]), 1e-9)
        return a, b, w
    a, b, w = system(rows)
    coef = _nnls(a * w[:, None], b * w)
    if coef[2] <= 0 or coef[3] <= 0:
        # Noisy runs (a busy machine, tiny lengths) can leave one tile kind
        # unresolved: fit one cost for both kinds instead.
        a1 = np.column_stack([a[:, 0], a[:, 1], a[:, 2] + a[:, 3]])
        c1 = _nnls(a1 * w[:, None], b * w)
        coef = np.array([c1[0], c1[1], c1[2], c1[2]])
    if coef[0] <= 0:
        coef[0] = launch
    launch = float(coef[0])
    row_s, full_s, partial_s = (float(x) for x in coef[1:])
    if full_s <= 0 or partial_s <= 0:
        raise Error("the fit gave a non-positive tile time (the runs are too "
                    "noisy); rerun with longer --lengths on a quieter machine")
    # At head_dim 64 every cost is scaled by s = f + (1 - f) / 2: the least
    # squares s, and the fixed share f = 2 s - 1.
    a64, b64, w64 = system(rows64)
    x = (a64[:, 1:] @ coef[1:]) * w64
    y = (b64 - a64[:, 0] * launch) * w64
    s = float(np.dot(x, y) / max(np.dot(x, x), 1e-30))
    fixed = min(max(2 * s - 1, 0.0), 1.0)
    scale64 = fixed + (1 - fixed) / 2
    pred = [launch + float(r[1:] @ coef[1:]) / threads for r in a] + \
        [launch + scale64 * float(r[1:] @ coef[1:]) / threads for r in a64]
    allrows = rows + rows64
    resid = [abs(p - r[3]) / r[3] for p, r in zip(pred, allrows)]
    tgt = {"format": "tessera-target", "version": 1,
           "name": args.name or f"cpu-{platform.node()}",
           "kind": "cpu",
           "source": f"measured on {cpu_name()} with {threads} threads by "
                     f"attn-calibrate target on "
                     f"{datetime.date.today().isoformat()}: "
                     f"{len(allrows)} runs, median fit error "
                     f"{100 * float(np.median(resid)):.1f}%",
           "units": threads, "slots_per_unit": 1, "block_q": 64,
           "block_k": 64, "head_dim": 128, "tile_fixed_share": fixed,
           "full_tile_s": full_s,
           "partial_tile_s": partial_s, "row_block_s": row_s,
           "launch_s": launch, "group_s": 0.0, "tensor_flops": 0.0,
           "memory_bandwidth": 0.0, "efficiency": 0.0,
           "runs": [{"pattern": r[4], "len": r[5],
                     "head_dim": 128 if i < len(rows) else 64,
                     "seconds": r[3], "predicted": float(p)}
                    for i, (r, p) in enumerate(zip(allrows, pred))]}
    write_json(args.output, tgt)
    print(f"wrote {args.output}: full tile {1e6 * full_s:.1f} us, partial "
          f"{1e6 * partial_s:.1f} us, per item {1e6 * row_s:.1f} us at "
          f"head_dim 128 ({100 * fixed:.0f}% of it independent of head_dim), "
          f"launch {1e3 * launch:.2f} ms ({threads} threads); median fit "
          f"error {100 * float(np.median(resid)):.1f}%")


def _nnls(a, b):
    """Least squares with non-negative coefficients (a few unknowns: every
    subset of free coefficients is tried)."""
    import itertools
    import numpy as np
    best, best_r = np.zeros(a.shape[1]), float("inf")
    for k in range(1, a.shape[1] + 1):
        for cols in itertools.combinations(range(a.shape[1]), k):
            x, *_ = np.linalg.lstsq(a[:, cols], b, rcond=None)
            if (x < 0).any():
                continue
            full = np.zeros(a.shape[1])
            full[list(cols)] = x
            r = float(np.sum((a @ full - b) ** 2))
            if r < best_r:
                best, best_r = full, r
    return best


def main():
    ap = argparse.ArgumentParser(prog="attn-calibrate", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--version", action="version",
                    version="attn-calibrate (Tessera @TESSERA_VERSION@)")
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("synth", help="synthetic Q/K/V with planted structure")
    s.add_argument("-o", "--output", required=True)
    s.add_argument("--layers", type=int, default=2)
    s.add_argument("--heads", type=int, default=8)
    s.add_argument("--kv-heads", type=int, default=2)
    s.add_argument("--head-dim", type=int, default=64)
    s.add_argument("--seq-len", "--len", dest="len", type=int, default=4096,
                   help="tokens (as --attn-select's seq-len)")
    s.add_argument("--kind", choices=("llm", "video"), default="llm")
    s.add_argument("--seed", type=int, default=0)
    a = sub.add_parser("accuracy", help="recall and error of candidates")
    a.add_argument("sample")
    a.add_argument("-o", "--output", required=True)
    a.add_argument("--candidates", help="file: one pattern per line")
    a.add_argument("--reference", help="default: causal for LLM samples, "
                   "dense otherwise")
    a.add_argument("--translate", help="path of attn-translate")
    t = sub.add_parser("target", help="fit this CPU's target file")
    t.add_argument("-o", "--output", required=True)
    t.add_argument("--heads", type=int, default=4)
    t.add_argument("--lengths", type=int, nargs="+",
                   default=[1024, 2048, 4096])
    t.add_argument("--repeats", type=int, default=3)
    t.add_argument("--name")
    t.add_argument("--translate", help="path of attn-translate")
    args = ap.parse_args()
    try:
        {"synth": synth, "accuracy": accuracy, "target": target}[
            args.command](args)
    except Error as e:
        print(f"attn-calibrate: error: {e}", file=sys.stderr)
        sys.exit(1)
    except RuntimeFailure as e:
        print(f"attn-calibrate: error: the runtime refused: {e}",
              file=sys.stderr)
        sys.exit(1)
    except MemoryError:
        print("attn-calibrate: error: out of memory (a smaller sample, "
              "fewer layers or candidates fit)", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("attn-calibrate: error: interrupted", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
