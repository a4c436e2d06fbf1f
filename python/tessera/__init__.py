"""Python binding of the Tessera runtime (ctypes over tessera.h; nothing to
compile).

    import numpy as np, tessera
    ctx = tessera.Context("cpu")
    bundle = ctx.load("build/bundles/video-dit")
    o, lse = bundle.attention(0, q, k, v)          # numpy [B, N, H, D]

    ctx = tessera.Context("cuda")                  # torch CUDA tensors,
    o, lse = ctx.load(path).attention(0, q, k, v)  # on the current stream

On a CUDA context the arrays are torch CUDA tensors or any object with the
CUDA Array Interface (`__cuda_array_interface__`: CuPy, Numba, JAX arrays...;
float16, and float32 for LSE and centroids: the interface has no bfloat16).
The binding allocates results only as torch tensors: with other arrays pass
the outputs (`out=`, `lse=`, `dq=`, `dk=`, `dv=`). Calls run on `stream=`
(a CUstream handle) when given, else on torch's current stream for torch
tensors, else on the stream q's interface names (version 3), else on the
default stream.

The runtime library (libtessera_runtime.so, a C API) is looked up, first
match wins: $TESSERA_RUNTIME_LIB (a file); $TESSERA_PREFIX/lib (an installed
prefix, `cmake --install build --prefix P`); $TESSERA_BUILD_DIR/lib (a build
tree); the build tree next to this package when it is imported from the
source tree (python/tessera -> build/lib); pkg-config's `tessera` libdir; the
Python environment's own prefix (sys.prefix/lib, as `cmake --install` into a
venv leaves it); the dynamic loader's path (/usr/local/lib after ldconfig,
LD_LIBRARY_PATH). The library's C API version must be API_VERSION.
`library_path()` says which one was loaded.

Install the package with `pip install ./python` (docs/runtime.md).
"""

import ctypes
import os

__all__ = ["Context", "Bundle", "TesseraError", "API_VERSION",
           "library_path"]

API_VERSION = 9

_CPU, _CUDA = 0, 1
_F32, _F16, _BF16 = 0, 1, 2


class _Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("dtype", ctypes.c_int),
                ("batch", ctypes.c_int64), ("seq", ctypes.c_int64),
                ("heads", ctypes.c_int64), ("head_dim", ctypes.c_int64),
                ("stride_batch", ctypes.c_int64), ("stride_seq", ctypes.c_int64),
                ("stride_head", ctypes.c_int64)]


class _LayerInfo(ctypes.Structure):
    _fields_ = [("index", ctypes.c_int64), ("num_heads", ctypes.c_int64),
                ("num_kv_heads", ctypes.c_int64), ("head_dim", ctypes.c_int64),
                ("dtype", ctypes.c_int), ("num_computed_heads", ctypes.c_int64),
                ("num_skipped_heads", ctypes.c_int64),
                ("num_dynamic_heads", ctypes.c_int64),
                ("centroid_clusters", ctypes.c_int64)]


class _DynamicInputs(ctypes.Structure):
    _fields_ = [("centroids", ctypes.c_void_p), ("centroid_heads", ctypes.c_int64),
                ("centroid_clusters", ctypes.c_int64),
                ("centroid_head_dim", ctypes.c_int64)]


class _AttentionDesc(ctypes.Structure):
    """tessera_attention_desc (tessera.h) up to head_count, the fields the
    library's tessera_attention_desc_init symbol fills (API 7's workspace
    fields are not exposed: CUDA calls from Python allocate the split-KV
    workspace in stream order)."""
    _fields_ = [("struct_size", ctypes.c_size_t), ("layer", ctypes.c_int64),
                ("q", _Tensor), ("k", _Tensor), ("v", _Tensor), ("o", _Tensor),
                ("lse", ctypes.c_void_p), ("scale", ctypes.c_float),
                ("dynamic_inputs", ctypes.c_void_p),
                ("cuda_stream", ctypes.c_void_p), ("num_seqs", ctypes.c_int64),
                ("cu_seqlens_q", ctypes.c_void_p),
                ("cu_seqlens_k", ctypes.c_void_p),
                ("seq_lens_k", ctypes.c_void_p),
                ("block_table", ctypes.c_void_p),
                ("max_pages_per_seq", ctypes.c_int64),
                ("block_table_stride", ctypes.c_int64),
                ("q_start", ctypes.c_void_p), ("k_start", ctypes.c_void_p),
                ("head_start", ctypes.c_int64), ("head_count", ctypes.c_int64)]


class _AttentionDescV8(_AttentionDesc):
    """The whole tessera_attention_desc of API 8, initialised with
    tessera_attention_desc_init_size: the API 6 fields, the workspace (left
    null) and the caller's block index of block_index heads."""
    _fields_ = [("workspace", ctypes.c_void_p),
                ("workspace_size", ctypes.c_size_t),
                ("block_index_offsets", ctypes.c_void_p),
                ("block_index_cols", ctypes.c_void_p),
                ("block_index_nnz", ctypes.c_int64),
                ("block_index_rows", ctypes.c_int64)]


class _AttentionDescV9(_AttentionDescV8):
    """The whole tessera_attention_desc of API 9: API 8's, and per-token
    head routing (head_active, head_active_size)."""
    _fields_ = [("head_active", ctypes.c_void_p),
                ("head_active_size", ctypes.c_int64)]


class TesseraError(RuntimeError):
    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


_LIB_NAMES = ("libtessera_runtime.so.0", "libtessera_runtime.so")


def _pkg_config_libdir():
    import shutil
    import subprocess
    if not shutil.which("pkg-config"):
        return None
    try:
        out = subprocess.run(["pkg-config", "--variable=libdir", "tessera"],
                             stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() \
        else None


def _candidates():
    """(where, path) pairs in the documented order; paths may not exist."""
    import sys
    here = os.path.dirname(os.path.abspath(__file__))
    env = os.environ.get
    if env("TESSERA_RUNTIME_LIB"):
        yield "$TESSERA_RUNTIME_LIB", env("TESSERA_RUNTIME_LIB")
    dirs = []
    if env("TESSERA_PREFIX"):
        for sub in ("lib", "lib64"):
            dirs.append(("$TESSERA_PREFIX", os.path.join(env("TESSERA_PREFIX"),
                                                         sub)))
    if env("TESSERA_BUILD_DIR"):
        dirs.append(("$TESSERA_BUILD_DIR",
                     os.path.join(env("TESSERA_BUILD_DIR"), "lib")))
    dirs.append(("the source tree's build/",
                 os.path.join(here, "..", "..", "build", "lib")))
    for where, d in dirs:
        for name in _LIB_NAMES:
            yield where, os.path.join(d, name)
    libdir = _pkg_config_libdir()
    if libdir:
        for name in _LIB_NAMES:
            yield "pkg-config", os.path.join(libdir, name)
    for name in _LIB_NAMES:
        yield "sys.prefix", os.path.join(sys.prefix, "lib", name)
    for name in _LIB_NAMES:
        yield "the loader path", name


_library_path = None


def library_path():
    """The path of the runtime library this package loaded."""
    return _library_path


def _load_library():
    global _library_path
    tried = []
    lib = None
    candidates = list(_candidates())
    for i, (where, c) in enumerate(candidates):
        # A variable the user set must lead to the library: no silent
        # fallback to another one.
        last_of_kind = i + 1 == len(candidates) or \
            candidates[i + 1][0] != where
        if os.sep in c and not os.path.exists(c):
            if where.startswith("$"):
                tried.append(f"{where}: no {c}")
                if last_of_kind:
                    raise ImportError(
                        f"{where} is set but holds no Tessera runtime "
                        f"library: " + "; ".join(tried))
            continue
        try:
            lib = ctypes.CDLL(c)
        except OSError as e:
            tried.append(f"{where}: {e}")
            continue
        try:
            lib.tessera_api_version.restype = ctypes.c_uint32
            version = lib.tessera_api_version()
        except AttributeError:
            tried.append(f"{where}: {c} is not the Tessera runtime")
            lib = None
            continue
        if version != API_VERSION:
            raise ImportError(
                f"{c} (from {where}) has C API version {version}, this "
                f"binding needs {API_VERSION}: install matching versions of "
                f"the runtime and the Python package")
        _library_path = os.path.normpath(c) if os.sep in c else c
        break
    if lib is None:
        raise ImportError(
            "cannot find libtessera_runtime; set TESSERA_RUNTIME_LIB to the "
            "library, TESSERA_PREFIX to an installed prefix or "
            "TESSERA_BUILD_DIR to a build tree. Tried: " + "; ".join(tried))
    p, i64, vp = ctypes.POINTER, ctypes.c_int64, ctypes.c_void_p
    lib.tessera_api_version.restype = ctypes.c_uint32
    lib.tessera_last_error.restype = ctypes.c_char_p
    lib.tessera_status_string.restype = ctypes.c_char_p
    lib.tessera_status_string.argtypes = [ctypes.c_int]
    lib.tessera_context_create.argtypes = [ctypes.c_int, ctypes.c_int, p(vp)]
    lib.tessera_context_destroy.argtypes = [vp]
    lib.tessera_bundle_load_file.argtypes = [vp, ctypes.c_char_p, p(vp)]
    lib.tessera_bundle_destroy.argtypes = [vp]
    lib.tessera_bundle_num_layers.argtypes = [vp, p(i64)]
    lib.tessera_bundle_layer_index.argtypes = [vp, i64, p(i64)]
    lib.tessera_bundle_layer_info.argtypes = [vp, i64, p(_LayerInfo)]
    lib.tessera_bundle_tile_classes.argtypes = [vp, i64, i64, i64, i64, i64,
                                                vp, ctypes.c_size_t]
    lib.tessera_attention.argtypes = [vp, i64, p(_Tensor), p(_Tensor), p(_Tensor),
                                      p(_Tensor), vp, ctypes.c_float, vp]
    lib.tessera_attention_dynamic.argtypes = [vp, i64, p(_Tensor), p(_Tensor),
                                              p(_Tensor), p(_Tensor), vp,
                                              ctypes.c_float, p(_DynamicInputs), vp]
    lib.tessera_attention_desc_init.argtypes = [p(_AttentionDesc)]
    lib.tessera_attention_desc_init.restype = None
    lib.tessera_attention_desc_init_size.argtypes = [vp, ctypes.c_size_t]
    lib.tessera_attention_desc_init_size.restype = None
    lib.tessera_attention_backward.argtypes = [vp, p(_AttentionDesc), p(_Tensor),
                                               vp, p(_Tensor), p(_Tensor),
                                               p(_Tensor)]
    lib.tessera_attention_run.argtypes = [vp, p(_AttentionDesc)]
    lib.tessera_bundle_visited_tiles.argtypes = [vp] + [i64] * 9 + [
        vp, ctypes.c_size_t]
    lib.tessera_context_set_num_threads.argtypes = [vp, ctypes.c_int]
    for name in ("tessera_attention_run", "tessera_context_set_num_threads",
                 "tessera_attention_backward",
                 "tessera_context_create", "tessera_context_destroy",
                 "tessera_bundle_load_file", "tessera_bundle_destroy",
                 "tessera_bundle_num_layers", "tessera_bundle_layer_index",
                 "tessera_bundle_layer_info", "tessera_bundle_tile_classes",
                 "tessera_attention", "tessera_attention_dynamic",
                 "tessera_bundle_visited_tiles"):
        getattr(lib, name).restype = ctypes.c_int
    return lib


_lib = _load_library()


def _check(status):
    if status != 0:
        raise TesseraError(_lib.tessera_status_string(status).decode(),
                           _lib.tessera_last_error().decode())


_I64_MIN, _I64_MAX = -(1 << 63), (1 << 63) - 1


def _int64(name, value):
    """`value` as a C int64, or an error naming it (ctypes would wrap it)."""
    import numbers
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    value = int(value)
    if not _I64_MIN <= value <= _I64_MAX:
        raise ValueError(f"{name} {value} does not fit in 64 bits")
    return value


def _overlaps_itself(shape, strides):
    """Whether two distinct indices of an array reach the same element."""
    dims = sorted((abs(st), n) for n, st in zip(shape, strides) if n > 1)
    extent = 1  # elements spanned by the dimensions so far (plus one)
    for st, n in dims:
        if st < extent:
            return True
        extent = st * (n - 1) + extent
    return False


def _describe(x, device, name, output=False):
    """A _Tensor for a numpy array (CPU) or a torch tensor (CUDA); `output`
    arrays must be writable and must not write one element twice."""
    if device == _CPU:
        import numpy as np
        if not isinstance(x, np.ndarray):
            raise TypeError(f"{name}: the CPU context takes numpy arrays")
        if x.ndim != 4:
            raise ValueError(f"{name}: tensors are [batch, seq, heads, head_dim], "
                             f"got {x.ndim} dimensions")
        if x.size == 0:
            raise ValueError(f"{name} is empty (shape {x.shape})")
        kinds = {np.dtype(np.float32): _F32, np.dtype(np.float16): _F16}
        if x.dtype not in kinds:
            raise TypeError(f"{name}: unsupported numpy dtype {x.dtype} "
                            f"(float32 or float16)")
        item = x.itemsize
        strides = [s // item for s in x.strides]
        if any(s % item for s in x.strides) or (x.shape[3] > 1 and strides[3] != 1):
            raise ValueError(f"{name}: head_dim must be contiguous")
        if output and not x.flags.writeable:
            raise ValueError(f"{name} is read-only")
        if output and _overlaps_itself(x.shape, strides):
            raise ValueError(f"{name} has overlapping elements (a zero or short "
                             f"stride): outputs need one place per element")
        return _Tensor(x.ctypes.data, kinds[x.dtype], *x.shape, *strides[:3])
    a = _cuda_array(x, name)
    if len(a.shape) != 4:
        raise ValueError(f"{name}: tensors are [batch, seq, heads, head_dim], "
                         f"got {len(a.shape)} dimensions")
    if 0 in a.shape:
        raise ValueError(f"{name} is empty (shape {a.shape})")
    kinds = {"f16": _F16, "bf16": _BF16}
    if a.dtype not in kinds:
        raise TypeError(f"{name}: unsupported dtype {a.dtype} on a CUDA "
                        f"context (float16 or bfloat16)")
    if a.shape[3] > 1 and a.strides[3] != 1:
        raise ValueError(f"{name}: head_dim must be contiguous")
    if output and a.readonly:
        raise ValueError(f"{name} is read-only")
    if output and _overlaps_itself(a.shape, a.strides):
        raise ValueError(f"{name} has overlapping elements (a zero or short "
                         f"stride): outputs need one place per element")
    return _Tensor(a.ptr, kinds[a.dtype], *a.shape, *a.strides[:3])


class _CudaArray:
    """What the binding reads of a CUDA array: its address, dtype ("f16",
    "bf16", "f32" or the interface's typestr), shape, strides in elements,
    whether it is read-only, the stream its interface names (None: none)
    and the torch tensor it is, if it is one."""

    def __init__(self, ptr, dtype, shape, strides, readonly, stream, tensor):
        self.ptr, self.dtype, self.shape = ptr, dtype, shape
        self.strides, self.readonly, self.stream = strides, readonly, stream
        self.tensor = tensor


def _torch_tensor(x):
    """x if it is a torch tensor (without importing torch), else None."""
    import sys
    torch = sys.modules.get("torch")
    return x if torch is not None and isinstance(x, torch.Tensor) else None


def _cuda_array(x, name):
    """A _CudaArray for a torch CUDA tensor or an object with the CUDA Array
    Interface (versions 2 and 3), or an error naming `name`."""
    t = _torch_tensor(x)
    if t is not None:
        import torch
        if not t.is_cuda:
            raise TypeError(f"{name}: the CUDA context takes CUDA arrays "
                            f"(torch CUDA tensors or objects with "
                            f"__cuda_array_interface__), got a {t.device} "
                            f"tensor")
        kinds = {torch.float16: "f16", torch.bfloat16: "bf16",
                 torch.float32: "f32", torch.int32: "i32",
                 torch.int64: "i64"}
        return _CudaArray(t.data_ptr(), kinds.get(t.dtype, str(t.dtype)),
                          tuple(t.shape), tuple(t.stride()), False, None, t)
    try:
        iface = x.__cuda_array_interface__
    except AttributeError:
        raise TypeError(f"{name}: the CUDA context takes CUDA arrays (torch "
                        f"CUDA tensors or objects with "
                        f"__cuda_array_interface__), got "
                        f"{type(x).__name__}") from None
    if not isinstance(iface, dict):
        raise ValueError(f"{name}: __cuda_array_interface__ is a "
                         f"{type(iface).__name__}, not a dict")
    try:
        shape = tuple(int(n) for n in iface["shape"])
        typestr = str(iface["typestr"])
        ptr, readonly = iface["data"]
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"{name}: a malformed __cuda_array_interface__ (it "
                         f"needs shape, typestr and data)") from None
    if iface.get("mask") is not None:
        raise ValueError(f"{name}: masked CUDA arrays are not supported")
    kinds = {"<f2": ("f16", 2), "<f4": ("f32", 4), "<i4": ("i32", 4),
             "<i8": ("i64", 8)}
    dtype, item = kinds.get(typestr, (typestr, 1))
    byte_strides = iface.get("strides")
    if byte_strides is None:  # C-contiguous
        byte_strides, step = [], item
        for n in reversed(shape):
            byte_strides.insert(0, step)
            step *= max(n, 1)
    try:
        byte_strides = tuple(int(s) for s in byte_strides)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: __cuda_array_interface__ strides "
                         f"{byte_strides!r} are not integers") from None
    if any(n < 0 for n in shape):
        raise ValueError(f"{name}: negative extent in shape {shape}")
    if len(byte_strides) != len(shape):
        raise ValueError(f"{name}: __cuda_array_interface__ has "
                         f"{len(byte_strides)} strides for {len(shape)} "
                         f"dimensions")
    if any(s % item for s in byte_strides):
        raise ValueError(f"{name}: strides {byte_strides} are not multiples "
                         f"of the element size {item}")
    if not ptr and 0 not in shape:
        raise ValueError(f"{name}: __cuda_array_interface__ has a null data "
                         f"pointer")
    stream = iface.get("stream")
    return _CudaArray(int(ptr or 0), dtype, shape,
                      tuple(s // item for s in byte_strides), bool(readonly),
                      None if stream is None else int(stream), None)


def _f32_cuda(x, name, want=None):
    """The address of a C-contiguous float32 CUDA array of shape `want`
    (LSE, centroids), or an error naming `name`."""
    a = _cuda_array(x, name)
    if a.dtype != "f32":
        raise ValueError(f"{name} must be float32, got {a.dtype}")
    if want is not None and a.shape != tuple(want):
        raise ValueError(f"{name} must be {tuple(want)}, got {a.shape}")
    step = 1
    for n, st in reversed(list(zip(a.shape, a.strides))):
        if n > 1 and st != step:
            raise ValueError(f"{name} must be C-contiguous")
        step *= n
    return a.ptr


def _stream(stream, q):
    """The CUstream of a CUDA call: `stream` when given, else torch's
    current stream for a torch q, else the stream q's interface names, else
    the default stream (0)."""
    if stream is not None:
        return _int64("stream", stream) or None
    t = _torch_tensor(q)
    if t is not None:
        import torch
        return torch.cuda.current_stream(t.device).cuda_stream
    a = _cuda_array(q, "q")
    return a.stream or None


def _seq_options(d, q, num_seqs, cu_seqlens_q, cu_seqlens_k, seq_lens_k,
                 block_table, q_start, k_start, head_start, head_count,
                 device=_CPU):
    """Sets a desc's per-sequence options (docs/runtime.md, "Calls") from
    numpy arrays (CPU) or CUDA arrays (a CUDA context: device memory the
    host does not read), checking their types and lengths: the library
    reads them through raw pointers. cu_seqlens_*, seq_lens_k and
    block_table ([num_seqs, max_pages_per_seq], rows may be strided)
    int32; q_start, k_start int64. The arrays must outlive the call."""
    import numpy as np
    d.num_seqs = _int64("num_seqs", num_seqs)
    d.head_start = _int64("head_start", head_start)
    d.head_count = _int64("head_count", head_count)
    seqs = d.num_seqs if d.num_seqs > 0 else d.q.batch
    arrays = (("cu_seqlens_q", cu_seqlens_q, np.int32, seqs + 1),
              ("cu_seqlens_k", cu_seqlens_k, np.int32, seqs + 1),
              ("seq_lens_k", seq_lens_k, np.int32, seqs),
              ("q_start", q_start, np.int64, seqs),
              ("k_start", k_start, np.int64, seqs))
    if device != _CPU:
        _cuda_seq_options(d, arrays, block_table, seqs)
        return
    for name, x, dtype, n in arrays:
        if x is None:
            continue
        if not isinstance(x, np.ndarray) or x.dtype != dtype or x.ndim != 1 \
                or not x.flags["C_CONTIGUOUS"] or x.shape[0] < n:
            raise ValueError(f"{name} must be a contiguous 1-D "
                             f"{np.dtype(dtype).name} array of at least "
                             f"{n} entries")
        setattr(d, name, x.ctypes.data)
    if block_table is not None:
        t = block_table
        if not isinstance(t, np.ndarray) or t.dtype != np.int32 or t.ndim != 2 \
                or t.shape[0] < seqs or t.shape[1] < 1 or t.strides[1] != 4 \
                or t.strides[0] % 4 or t.strides[0] < 4 * t.shape[1]:
            raise ValueError(f"block_table must be an int32 array [num_seqs, "
                             f"max_pages_per_seq] with contiguous rows and "
                             f"at least {seqs} rows")
        d.block_table = t.ctypes.data
        d.max_pages_per_seq = t.shape[1]
        d.block_table_stride = t.strides[0] // 4


def _cuda_seq_options(d, arrays, block_table, seqs):
    """_seq_options' CUDA arrays: int32 ("i32") or int64 ("i64") as
    `arrays` names them, contiguous, long enough."""
    for name, x, dtype, n in arrays:
        if x is None:
            continue
        a = _cuda_array(x, name)
        want = "i32" if dtype.__name__ == "int32" else "i64"
        if a.dtype != want or len(a.shape) != 1 or \
                (a.shape[0] > 1 and a.strides[0] != 1) or a.shape[0] < n:
            raise ValueError(f"{name} must be a contiguous 1-D "
                             f"{dtype.__name__} CUDA array of at least "
                             f"{n} entries")
        setattr(d, name, a.ptr)
    if block_table is not None:
        a = _cuda_array(block_table, "block_table")
        if a.dtype != "i32" or len(a.shape) != 2 or a.shape[0] < seqs or \
                a.shape[1] < 1 or a.strides[1] != 1 or \
                a.strides[0] < a.shape[1]:
            raise ValueError(f"block_table must be an int32 CUDA array "
                             f"[num_seqs, max_pages_per_seq] with contiguous "
                             f"rows and at least {seqs} rows")
        d.block_table = a.ptr
        d.max_pages_per_seq = a.shape[1]
        d.block_table_stride = a.strides[0]


def _block_index(d, block_index, batch, heads):
    """Sets an _AttentionDescV8's block index (docs/runtime.md,
    "Caller-provided block indices") from (offsets, cols): int32 numpy
    arrays, offsets C-contiguous [batch, heads, R + 1] (the call's batch
    entries and heads), cols 1-D. The library checks R and every row of
    the block_index heads. The arrays must outlive the call."""
    import numpy as np
    try:
        offsets, cols = block_index
    except (TypeError, ValueError):
        raise ValueError("block_index must be a pair (offsets, cols)") from None
    for name, x, ndim in (("offsets", offsets, 3), ("cols", cols, 1)):
        if not isinstance(x, np.ndarray) or x.dtype != np.int32 or \
                x.ndim != ndim or not x.flags["C_CONTIGUOUS"]:
            raise ValueError(f"block_index {name} must be a C-contiguous "
                             f"{ndim}-D int32 array")
    if offsets.shape[:2] != (batch, heads) or offsets.shape[2] < 1:
        raise ValueError(f"block_index offsets must be [{batch}, {heads}, "
                         f"R + 1], got shape {tuple(offsets.shape)}")
    d.block_index_offsets = offsets.ctypes.data
    d.block_index_cols = cols.ctypes.data
    d.block_index_nnz = cols.shape[0]
    d.block_index_rows = offsets.shape[2] - 1


def _head_active(d, head_active, q, cu_seqlens_q, heads):
    """Sets an _AttentionDescV9's per-token head routing (docs/runtime.md,
    "Per-token head routing") from a C-contiguous numpy bool or uint8 array:
    [B, Nq, heads] for dense queries, [T, heads] for packed ones (heads: the
    call's, head_count or H); nonzero = the row uses the head. The array
    must outlive the call."""
    import numpy as np
    want = (d.q.seq, heads) if cu_seqlens_q is not None else \
        (d.q.batch, d.q.seq, heads)
    x = head_active
    if not isinstance(x, np.ndarray) or x.dtype not in (np.bool_, np.uint8) \
            or not x.flags["C_CONTIGUOUS"]:
        raise ValueError("head_active must be a C-contiguous bool or uint8 "
                         "numpy array")
    if x.shape != want:
        raise ValueError(f"head_active must be "
                         f"{'[T, heads]' if len(want) == 2 else '[batch, Nq, heads]'}"
                         f" = {want}, got {x.shape}")
    d.head_active = x.ctypes.data
    d.head_active_size = x.size


def _seq_lse_size(tq, cu_seqlens_q, head_count):
    """Floats of a per-sequence call's LSE (tq: q's _Tensor): [heads, T]
    packed, else [B, heads, Nq]."""
    heads = head_count if head_count else tq.heads
    return heads * tq.seq * (1 if cu_seqlens_q is not None else tq.batch)


class Bundle:
    def __init__(self, context, handle):
        self.context = context
        self._h = handle

    def __del__(self):
        if getattr(self, "_h", None):
            _lib.tessera_bundle_destroy(self._h)
            self._h = None

    def layers(self):
        n = ctypes.c_int64()
        _check(_lib.tessera_bundle_num_layers(self._h, ctypes.byref(n)))
        out = []
        for i in range(n.value):
            idx = ctypes.c_int64()
            _check(_lib.tessera_bundle_layer_index(self._h, i, ctypes.byref(idx)))
            out.append(idx.value)
        return out

    def layer_info(self, layer):
        info = _LayerInfo()
        _check(_lib.tessera_bundle_layer_info(self._h, _int64("layer", layer),
                                              ctypes.byref(info)))
        return {"index": info.index, "num_heads": info.num_heads,
                "num_kv_heads": info.num_kv_heads, "head_dim": info.head_dim,
                "dtype": {_F16: "f16", _BF16: "bf16"}.get(info.dtype, "f32"),
                "num_computed_heads": info.num_computed_heads,
                "num_skipped_heads": info.num_skipped_heads,
                "num_dynamic_heads": info.num_dynamic_heads,
                "centroid_clusters": info.centroid_clusters}

    def tile_classes(self, layer, q_len, k_len, block_q=64, block_k=64):
        """numpy uint8 [H, ceil(Nq / block_q), ceil(Nk / block_k)]: 0 empty
        (skipped), 1 partial, 2 full, as the kernels' schedule has them."""
        import numpy as np
        args = [_int64(n, x) for n, x in (("layer", layer), ("q_len", q_len),
                                          ("k_len", k_len),
                                          ("block_q", block_q),
                                          ("block_k", block_k))]
        heads = self.layer_info(layer)["num_heads"]
        tq = -(-args[1] // args[3]) if args[3] > 0 else 0
        tk = -(-args[2] // args[4]) if args[4] > 0 else 0
        out = np.zeros((heads, max(tq, 0), max(tk, 0)), np.uint8)
        # A non-null buffer even when empty, so that the library judges the
        # arguments (a zero tile, a bad length) rather than the pointer.
        buf = out if out.size else np.zeros(1, np.uint8)
        _check(_lib.tessera_bundle_tile_classes(
            self._h, *args, buf.ctypes.data, out.size))
        return out

    def visited_tiles(self, layer, q_len, k_len, q_blocks, k_blocks,
                      block_q=64, block_k=64):
        """numpy int64 [H, 2]: the partial and full tiles head h visits in
        query blocks q_blocks = (begin, end) x key blocks k_blocks of the
        block_q x block_k grid of a call with Nq = q_len, Nk = k_len
        (tessera_bundle_visited_tiles); -1 for dynamic heads."""
        import numpy as np
        args = [_int64(n, x) for n, x in (
            ("layer", layer), ("q_len", q_len), ("k_len", k_len),
            ("block_q", block_q), ("block_k", block_k),
            ("q_blocks[0]", q_blocks[0]), ("q_blocks[1]", q_blocks[1]),
            ("k_blocks[0]", k_blocks[0]), ("k_blocks[1]", k_blocks[1]))]
        heads = self.layer_info(layer)["num_heads"]
        out = np.zeros((heads, 2), np.int64)
        _check(_lib.tessera_bundle_visited_tiles(
            self._h, *args, out.ctypes.data, out.size))
        return out

    def _dynamic_inputs(self, centroids):
        """The call's tessera_dynamic_inputs for `centroids` (None: none)."""
        if centroids is None:
            return None
        shape = tuple(centroids.shape)
        if len(shape) != 3:
            raise ValueError(f"centroids must be [heads, clusters, head_dim], "
                             f"got shape {shape}")
        if self.context.device == _CPU:
            import numpy as np
            if centroids.dtype != np.float32 or not centroids.flags["C_CONTIGUOUS"]:
                raise ValueError("centroids must be a C-contiguous float32 array")
            ptr = centroids.ctypes.data
        else:
            ptr = _f32_cuda(centroids, "centroids")
        return _DynamicInputs(ptr, *shape)

    def attention(self, layer, q, k, v, out=None, lse=True, scale=0.0,
                  centroids=None, block_index=None, head_active=None,
                  stream=None):
        """Returns (o, lse): o like q; lse [B, H, Nq] float32, or None.
        out: the output (written in place; allocated when None), lse: True
        (allocated), False (not computed) or a C-contiguous float32
        [B, H, Nq] array written in place. stream: a CUDA context's CUstream
        (the module's docstring says which one runs otherwise).
        centroids: float32 [H, C, D] (numpy on the CPU, a CUDA array on
        CUDA) for the layer's routing groups that take the engine's
        centroids (layer_info(layer)["centroid_clusters"] = C).
        block_index: (offsets, cols) for the layer's block_index heads
        (int32 numpy arrays, host memory on every context: _block_index).
        head_active: bool or uint8 numpy [B, Nq, H], which heads each query
        row uses (per-token head routing; inactive pairs get o = 0 and lse =
        -inf; host memory on every context: CUDA contexts take it for dense
        calls of bundles emitted with attn-translate --head-routing)."""
        layer = _int64("layer", layer)
        if block_index is not None or head_active is not None:
            return self._attention_block_index(layer, q, k, v, out, lse,
                                               scale, centroids, block_index,
                                               head_active, stream)
        dyn = self._dynamic_inputs(centroids)
        dev = self.context.device
        tq, tk, tv = (_describe(x, dev, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
        want = (tq.batch, tq.heads, tq.seq)
        o = self._result(q, out, "out")
        l = self._result(q, None, "lse", want) if lse is True else \
            (lse if lse is not False and lse is not None else None)
        lptr = None if l is None else self._lse_pointer(l, "lse", want)
        if dev == _CPU:
            if stream is not None:
                raise ValueError("stream: a CPU context's calls take no stream")
        else:
            stream = _stream(stream, q)
        to = _describe(o, dev, "out", output=True)
        _check(_lib.tessera_attention_dynamic(
            self._h, layer, ctypes.byref(tq), ctypes.byref(tk), ctypes.byref(tv),
            ctypes.byref(to), lptr, float(scale),
            ctypes.byref(dyn) if dyn is not None else None, stream))
        return o, l


    def _result(self, like, given, name, shape=None):
        """`given`, or a new result array: like `like` (contiguous), or
        float32 of `shape`: numpy on a CPU context, a torch tensor on a
        CUDA context when `like` is one (other CUDA arrays: the caller
        passes the result)."""
        if given is not None:
            return given
        if self.context.device == _CPU:
            import numpy as np
            return np.empty(shape, np.float32) if shape else \
                np.empty_like(like, order="C")
        t = _torch_tensor(like)
        if t is None:
            raise ValueError(f"{name}: pass it (e.g. {name}=...) on a CUDA "
                             f"context: the binding allocates results only "
                             f"as torch tensors")
        import torch
        return torch.empty(shape, dtype=torch.float32, device=t.device) \
            if shape else torch.empty(t.shape, dtype=t.dtype, device=t.device)

    def _lse_pointer(self, x, name, want, output=True, min_size=None):
        """The address of a C-contiguous float32 array of shape `want` (an
        LSE or its gradient; writable if `output`), or of any shape holding
        at least `min_size` floats, on this context's device."""
        if self.context.device != _CPU:
            a = _cuda_array(x, name)
            if output and a.readonly:
                raise ValueError(f"{name} is read-only")
            ptr = _f32_cuda(x, name, want)
            size = 1
            for n in a.shape:
                size *= n
            if min_size is not None and size < min_size:
                raise ValueError(f"{name} holds {size} floats; the call "
                                 f"writes {min_size}")
            return ptr
        import numpy as np
        if not isinstance(x, np.ndarray) or x.dtype != np.float32 or \
                not x.flags["C_CONTIGUOUS"]:
            raise ValueError(f"{name} must be a C-contiguous float32 array")
        if want is not None and x.shape != tuple(want):
            raise ValueError(f"{name} must be {tuple(want)}, got {x.shape}")
        if min_size is not None and x.size < min_size:
            raise ValueError(f"{name} holds {x.size} floats; the call "
                             f"writes {min_size}")
        if output and not x.flags.writeable:
            raise ValueError(f"{name} is read-only")
        return x.ctypes.data

    def _attention_block_index(self, layer, q, k, v, out, lse, scale,
                               centroids, block_index, head_active=None,
                               stream=None):
        """attention() with a caller's block index or head routing: a dense
        tessera_attention_run (API 8, 9)."""
        tq = _describe(q, self.context.device, "q")
        o = self._result(q, out, "out")
        if lse is True:
            l = self._result(q, None, "lse", (tq.batch, tq.heads, tq.seq))
        else:
            l = None if lse is False else lse
        self.attention_run(layer, q, k, v, o, lse=l, scale=scale,
                           centroids=centroids, block_index=block_index,
                           head_active=head_active, stream=stream)
        return o, l

    def attention_run(self, layer, q, k, v, out, lse=None, scale=0.0,
                      num_seqs=0, cu_seqlens_q=None, cu_seqlens_k=None,
                      seq_lens_k=None, block_table=None, q_start=None,
                      k_start=None, head_start=0, head_count=0,
                      centroids=None, block_index=None, head_active=None,
                      stream=None):
        """tessera_attention_run (docs/runtime.md, "Calls"): numpy arrays on
        a CPU context, CUDA arrays on a CUDA context (the sequence arrays
        too: device memory there; block_index and head_active stay numpy,
        host memory, on every context). q, k, v, out 4-D as the mode wants
        them (packed: batch 1; paged k and v: [num_pages, page_size, Hkv,
        D]); out and lse (float32, C-contiguous, at least the mode's size,
        or None) are written in place. cu_seqlens_*, seq_lens_k and
        block_table ([num_seqs, max_pages_per_seq], rows may be strided)
        int32; q_start, k_start int64. centroids as for attention();
        block_index: (offsets, cols) for block_index heads (int32, offsets
        [B, heads, R + 1]; docs/runtime.md); head_active: bool or uint8,
        [B, Nq, heads] dense or [T, heads] packed (per-token head routing,
        _head_active). stream: as for attention(). Returns out."""
        dev = self.context.device
        d = _AttentionDescV9()
        _lib.tessera_attention_desc_init_size(ctypes.byref(d), ctypes.sizeof(d))
        d.layer = _int64("layer", layer)
        d.q, d.k, d.v = (_describe(x, dev, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
        d.o = _describe(out, dev, "out", output=True)
        d.scale = float(scale)
        _seq_options(d, q, num_seqs, cu_seqlens_q, cu_seqlens_k, seq_lens_k,
                     block_table, q_start, k_start, head_start, head_count,
                     dev)
        dyn = self._dynamic_inputs(centroids)
        if dyn is not None:
            d.dynamic_inputs = ctypes.addressof(dyn)
        if block_index is not None:
            _block_index(d, block_index, d.num_seqs or d.q.batch,
                         d.head_count or d.q.heads)
        if head_active is not None:
            _head_active(d, head_active, q, cu_seqlens_q,
                         d.head_count or d.q.heads)
        if lse is not None:
            want = _seq_lse_size(d.q, cu_seqlens_q, head_count)
            d.lse = self._lse_pointer(lse, "lse", None, min_size=want)
        if dev == _CPU:
            if stream is not None:
                raise ValueError("stream: a CPU context's calls take no stream")
        else:
            d.cuda_stream = _stream(stream, q)
        _check(_lib.tessera_attention_run(self._h, ctypes.byref(d)))
        return out

    def attention_backward(self, layer, q, k, v, o, lse, do, dlse=None,
                           scale=0.0, num_seqs=0, cu_seqlens_q=None,
                           cu_seqlens_k=None, seq_lens_k=None,
                           block_table=None, q_start=None, k_start=None,
                           head_start=0, head_count=0, centroids=None,
                           block_index=None, head_active=None, dq=None,
                           dk=None, dv=None, stream=None):
        """(dq, dk, dv) of a forward call attention(layer, q, k, v) (or
        attention_run with the same per-sequence options) that gave o and lse
        (required, the forward's layout: [B, H, Nq], or [H, T] packed), for
        the gradient do of the loss by o, and dlse (float32, lse's shape) by
        lse where the loss reads it. numpy arrays of one dtype on a CPU
        context, CUDA arrays of the layer's dtype on a CUDA context (LSE and
        dlse float32; the sequence arrays as for attention_run; the library
        refuses by name what its CUDA backward does not take,
        docs/backward.md); dq like q, dk
        and dv like k, contiguous, allocated unless passed (dq=, dk=, dv=:
        written in place; on CUDA required unless q is a torch tensor);
        centroids as the forward took them (routing heads rebuild their
        clusters), block_index (block_index heads attend the same
        lists) and head_active (inactive pairs get dq = 0 and no share of
        dk and dv). The library refuses the options it has no backward for by
        name."""
        dev = self.context.device
        if dev == _CPU and stream is not None:
            raise ValueError("stream: a CPU context's calls take no stream")
        d = _AttentionDescV9()
        _lib.tessera_attention_desc_init_size(ctypes.byref(d), ctypes.sizeof(d))
        d.layer = _int64("layer", layer)
        d.q, d.k, d.v = (_describe(x, dev, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
        d.o = _describe(o, dev, "o")
        _seq_options(d, q, num_seqs, cu_seqlens_q, cu_seqlens_k, seq_lens_k,
                     block_table, q_start, k_start, head_start, head_count,
                     dev)
        heads = head_count if head_count else d.q.heads
        want = (heads, d.q.seq) if cu_seqlens_q is not None else \
            (d.q.batch, heads, d.q.seq)
        d.lse = self._lse_pointer(lse, "lse", want, output=False)
        dlse_ptr = None if dlse is None else \
            self._lse_pointer(dlse, "dlse", want, output=False)
        d.scale = float(scale)
        dyn = self._dynamic_inputs(centroids)
        if dyn is not None:
            d.dynamic_inputs = ctypes.addressof(dyn)
        if block_index is not None:
            _block_index(d, block_index, d.num_seqs or d.q.batch, heads)
        if head_active is not None:
            _head_active(d, head_active, q, cu_seqlens_q, heads)
        dq = self._result(q, dq, "dq")
        dk = self._result(k, dk, "dk")
        dv = self._result(k, dv, "dv")
        tdo = _describe(do, dev, "do")
        tdq, tdk, tdv = (_describe(x, dev, n, output=True)
                         for x, n in ((dq, "dq"), (dk, "dk"), (dv, "dv")))
        if dev != _CPU:
            d.cuda_stream = _stream(stream, q)
        _check(_lib.tessera_attention_backward(
            self._h, ctypes.byref(d), ctypes.byref(tdo), dlse_ptr,
            ctypes.byref(tdq), ctypes.byref(tdk), ctypes.byref(tdv)))
        return dq, dk, dv


class Context:
    def __init__(self, device="cpu", ordinal=0):
        if device not in ("cpu", "cuda"):
            raise ValueError("device is 'cpu' or 'cuda'")
        self.device = _CPU if device == "cpu" else _CUDA
        h = ctypes.c_void_p()
        if self.device == _CUDA:
            try:
                import torch
            except ImportError:  # CuPy, Numba, ... arrays: no torch needed
                torch = None
            if torch is not None and torch.cuda.is_available():
                torch.cuda.init()  # share PyTorch's primary context
        _check(_lib.tessera_context_create(self.device, ordinal, ctypes.byref(h)))
        self._h = h

    def __del__(self):
        if getattr(self, "_h", None):
            _lib.tessera_context_destroy(self._h)
            self._h = None

    def set_num_threads(self, n):
        """The threads of this CPU context's calls (0: every hardware
        thread)."""
        _check(_lib.tessera_context_set_num_threads(self._h, int(n)))

    def load(self, path):
        """Loads a bundle directory (str, bytes or os.PathLike)."""
        try:
            raw = os.fsencode(path)
        except TypeError:
            raise TypeError(f"a bundle path is a str, bytes or os.PathLike, "
                            f"got {type(path).__name__}") from None
        if b"\0" in raw:
            raise ValueError(f"the bundle path {path!r} contains a NUL byte")
        h = ctypes.c_void_p()
        _check(_lib.tessera_bundle_load_file(self._h, raw, ctypes.byref(h)))
        return Bundle(self, h)
