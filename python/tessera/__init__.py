"""Python binding of the Tessera runtime (ctypes over tessera.h; nothing to
compile).

    import numpy as np, tessera
    ctx = tessera.Context("cpu")
    bundle = ctx.load("build/bundles/video-dit")
    o, lse = bundle.attention(0, q, k, v)          # numpy [B, N, H, D]

    ctx = tessera.Context("cuda")                  # torch CUDA tensors,
    o, lse = ctx.load(path).attention(0, q, k, v)  # on the current stream

The library is found from $TESSERA_RUNTIME_LIB, then next to this package in
a build tree (build/lib), then on the loader path.
"""

import ctypes
import os

__all__ = ["Context", "Bundle", "TesseraError", "API_VERSION"]

API_VERSION = 1

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
                ("num_skipped_heads", ctypes.c_int64)]


class TesseraError(RuntimeError):
    def __init__(self, status, message):
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message


def _load_library():
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.environ.get("TESSERA_RUNTIME_LIB"),
                  os.path.join(here, "..", "..", "build", "lib", "libtessera_runtime.so"),
                  "libtessera_runtime.so.0", "libtessera_runtime.so"]
    errors = []
    for c in candidates:
        if not c:
            continue
        try:
            lib = ctypes.CDLL(c)
            break
        except OSError as e:
            errors.append(str(e))
    else:
        raise ImportError("cannot load libtessera_runtime: " + "; ".join(errors))
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
    lib.tessera_attention.argtypes = [vp, i64, p(_Tensor), p(_Tensor), p(_Tensor),
                                      p(_Tensor), vp, ctypes.c_float, vp]
    for name in ("tessera_context_create", "tessera_context_destroy",
                 "tessera_bundle_load_file", "tessera_bundle_destroy",
                 "tessera_bundle_num_layers", "tessera_bundle_layer_index",
                 "tessera_bundle_layer_info", "tessera_attention"):
        getattr(lib, name).restype = ctypes.c_int
    if lib.tessera_api_version() != API_VERSION:
        raise ImportError(f"libtessera_runtime has API version "
                          f"{lib.tessera_api_version()}, this binding {API_VERSION}")
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
    import torch
    if not isinstance(x, torch.Tensor) or not x.is_cuda:
        raise TypeError(f"{name}: the CUDA context takes torch CUDA tensors")
    if x.dim() != 4:
        raise ValueError(f"{name}: tensors are [batch, seq, heads, head_dim], "
                         f"got {x.dim()} dimensions")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(x.shape)})")
    kinds = {torch.float16: _F16, torch.bfloat16: _BF16}
    if x.dtype not in kinds:
        raise TypeError(f"{name}: unsupported torch dtype {x.dtype} "
                        f"(float16 or bfloat16)")
    if x.shape[3] > 1 and x.stride(3) != 1:
        raise ValueError(f"{name}: head_dim must be contiguous")
    if output and _overlaps_itself(tuple(x.shape), x.stride()):
        raise ValueError(f"{name} has overlapping elements (a zero or short "
                         f"stride): outputs need one place per element")
    return _Tensor(x.data_ptr(), kinds[x.dtype], *x.shape, *x.stride()[:3])


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
                "num_skipped_heads": info.num_skipped_heads}

    def attention(self, layer, q, k, v, out=None, lse=True, scale=0.0):
        """Returns (o, lse): o like q; lse [B, H, Nq] float32, or None."""
        layer = _int64("layer", layer)
        dev = self.context.device
        if dev == _CPU:
            import numpy as np
            o = np.empty_like(q) if out is None else out
            l = np.empty((q.shape[0], q.shape[2], q.shape[1]), np.float32) if lse else None
            lptr = l.ctypes.data if lse else None
            stream = None
        else:
            import torch
            o = torch.empty_like(q) if out is None else out
            l = torch.empty((q.shape[0], q.shape[2], q.shape[1]), dtype=torch.float32,
                            device=q.device) if lse else None
            lptr = l.data_ptr() if lse else None
            stream = torch.cuda.current_stream(q.device).cuda_stream
        tq, tk, tv = (_describe(x, dev, n) for x, n in ((q, "q"), (k, "k"), (v, "v")))
        to = _describe(o, dev, "out", output=True)
        _check(_lib.tessera_attention(self._h, layer, ctypes.byref(tq), ctypes.byref(tk),
                                      ctypes.byref(tv), ctypes.byref(to), lptr,
                                      float(scale), stream))
        return o, l


class Context:
    def __init__(self, device="cpu", ordinal=0):
        if device not in ("cpu", "cuda"):
            raise ValueError("device is 'cpu' or 'cuda'")
        self.device = _CPU if device == "cpu" else _CUDA
        h = ctypes.c_void_p()
        if self.device == _CUDA:
            import torch
            torch.cuda.init()  # share PyTorch's primary context
        _check(_lib.tessera_context_create(self.device, ordinal, ctypes.byref(h)))
        self._h = h

    def __del__(self):
        if getattr(self, "_h", None):
            _lib.tessera_context_destroy(self._h)
            self._h = None

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
