"""PyTorch interop: a custom op and a FlexAttention BlockMask export.

    import torch, tessera.torch as tt
    o, lse = tt.attention(q, k, v, "build/bundles/video-dit", layer=0)
    # q: [B, Nq, H, D], k and v: [B, Nk, Hkv, D] (the engine layout; SDPA's
    # is [B, H, N, D]: pass q.transpose(1, 2) and so on)

`torch.ops.tessera.attention` is a `torch.library` custom op with CPU and
CUDA kernels and a fake (meta) implementation, so `torch.compile` traces
through it (fullgraph). q, k and v may be strided views (head_dim
contiguous, e.g. SDPA-layout tensors transposed); o and lse are always
contiguous. CPU: float32 runs as it is, and float16 on float16 layers; other
float16 and bfloat16 inputs are computed in float32 and the output cast
back. CUDA: the layer's dtype (float16 or bfloat16), on the current stream.

Autograd: the op's backward is `torch.ops.tessera.attention_backward`
(the runtime's tessera_attention_backward, docs/backward.md): dq, dk, dv
from q, k, v, the forward's o and lse, and the gradients by o and by lse
(a loss may read both). On the CPU it runs in float32 (gradients cast back
to the inputs' dtypes), for static heads and dynamic heads (vertical-slash,
block top-k, routing with the forward's centroids; docs/backward.md). On
CUDA it runs the runtime's CUDA backward kernels on the current stream, in
the layer's dtype, for the layers the C API's CUDA backward takes (static
heads, vertical-slash and block top-k heads; others raise naming what is
not supported).

`block_mask(bundle, layer, q_len, kv_len)` gives a layer's schedule as a
FlexAttention BlockMask: the tiles the kernels skip, the full tiles (no mask
work) and the partial tiles, whose mask_mod is the layer's pattern program
(from the bundle's manifest) evaluated with torch operations, so
`flex_attention(q, k, v, block_mask=...)` computes the same attention.
Contexts and bundles are cached per device and path; `clear_cache()` drops
them (e.g. after rewriting a bundle).
"""

import json
import os
import threading

import torch
from typing import Optional

import tessera as _tessera

__all__ = ["attention", "block_mask", "mask_mod", "tile_classes",
           "clear_cache"]

_lock = threading.Lock()
_contexts = {}
_bundles = {}


def clear_cache():
    """Drops the cached contexts and bundles."""
    with _lock:
        _bundles.clear()
        _contexts.clear()


def _bundle(path, device):
    if not isinstance(path, str) or not path:
        raise ValueError("bundle must be the path of a bundle directory")
    path = os.path.abspath(path)
    key = (device.type, device.index if device.type == "cuda" else None)
    with _lock:
        ctx = _contexts.get(key)
        if ctx is None:
            ctx = _tessera.Context(device.type, device.index or 0)
            _contexts[key] = ctx
        b = _bundles.get((key, path))
        if b is None:
            b = ctx.load(path)
            _bundles[(key, path)] = b
        return b


def _check_shapes(q, k, v):
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(f"tessera.attention: {name} must be [batch, seq, "
                             f"heads, head_dim], got {tuple(x.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"tessera.attention: k {tuple(k.shape)} and v "
                         f"{tuple(v.shape)} differ")
    if q.device != k.device or q.device != v.device:
        raise ValueError("tessera.attention: q, k and v must be on one device")


@torch.library.custom_op("tessera::attention", mutates_args=(),
                         device_types=("cpu", "cuda"))
def _attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                  bundle: str, layer: int, scale: float,
                  centroids: Optional[torch.Tensor] = None,
                  block_index_offsets: Optional[torch.Tensor] = None,
                  block_index_cols: Optional[torch.Tensor] = None,
                  head_active: Optional[torch.Tensor] = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    _check_shapes(q, k, v)
    b = _bundle(bundle, q.device)
    # The index is host memory on every context (the library validates it
    # on the host and, on CUDA, uploads it on the call's stream).
    index = _block_index_arrays(block_index_offsets, block_index_cols)
    # head_active too: host memory on every context (a CUDA tensor is
    # copied to the host, which waits for the stream, as a block index is;
    # CUDA takes it in dense calls of --head-routing bundles, forward only).
    active = _head_active_array(head_active)
    if q.device.type == "cpu":
        if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise TypeError(f"tessera.attention: unsupported dtype {q.dtype} "
                            f"on the CPU (float32, float16 or bfloat16)")
        # The CPU executor takes float32 or the layer's own dtype (numpy has
        # float16 but no bfloat16).
        native = q.dtype == torch.float16 and \
            b.layer_info(layer)["dtype"] == "f16"
        work = q.dtype if q.dtype == torch.float32 or native else torch.float32
        qn, kn, vn = (x.detach().to(work).numpy() for x in (q, k, v))
        o = torch.empty(q.shape, dtype=work)
        cn = None if centroids is None else \
            centroids.detach().to(torch.float32).contiguous().numpy()
        _, lse = b.attention(layer, qn, kn, vn, out=o.numpy(), scale=scale,
                             centroids=cn, block_index=index,
                             head_active=active)
        return o.to(q.dtype), torch.from_numpy(lse)
    cd = None if centroids is None else \
        centroids.detach().to(device=q.device, dtype=torch.float32).contiguous()
    # A contiguous output whatever q's strides (empty_like would copy a
    # transposed q's): the fake implementation promises exactly that.
    o, lse = b.attention(layer, q.detach(), k.detach(), v.detach(),
                         out=q.new_empty(q.shape), scale=scale, centroids=cd,
                         block_index=index, head_active=active)
    return o, lse


def _block_index_arrays(offsets, cols):
    """(offsets, cols) as int32 numpy arrays for the binding, or None."""
    if offsets is None and cols is None:
        return None
    if offsets is None or cols is None:
        raise ValueError("tessera.attention: block_index needs both offsets "
                         "and cols")
    return tuple(x.detach().to(device="cpu", dtype=torch.int32).contiguous()
                 .numpy() for x in (offsets, cols))


def _head_active_array(head_active):
    """head_active as a C-contiguous uint8 numpy array, or None."""
    if head_active is None:
        return None
    if head_active.dtype not in (torch.bool, torch.uint8):
        raise TypeError(f"tessera.attention: head_active must be bool or "
                        f"uint8, got {head_active.dtype}")
    return head_active.detach().to(device="cpu", dtype=torch.uint8) \
        .contiguous().numpy()


@_attention_op.register_fake
def _(q, k, v, bundle, layer, scale, centroids=None, block_index_offsets=None,
      block_index_cols=None, head_active=None):
    # Contiguous outputs, as both real kernels give, also for transposed
    # (non-contiguous) q, k and v such as transformers passes.
    _check_shapes(q, k, v)
    return (q.new_empty(q.shape),
            q.new_empty((q.shape[0], q.shape[2], q.shape[1]),
                        dtype=torch.float32))


def _backward_arrays(q, k, v, o, grad_o, lse, grad_lse):
    """The backward's numpy float32 arrays: q, k, v, o and grad_o as views
    where head_dim is contiguous, else copies (autograd's gradients may be
    expanded: a sum's is all strides 0); lse and grad_lse (or None)
    contiguous."""
    f32 = [x.detach().to(torch.float32) for x in (q, k, v, o, grad_o)]
    f32 = [x if x.stride(3) == 1 or x.shape[3] == 1 else x.contiguous()
           for x in f32]
    lsen = lse.detach().to(torch.float32).contiguous().numpy()
    gl = None if grad_lse is None else \
        grad_lse.detach().to(torch.float32).contiguous().numpy()
    return tuple(x.numpy() for x in f32) + (lsen, gl)


@torch.library.custom_op("tessera::attention_backward", mutates_args=(),
                         device_types=("cpu", "cuda"))
def _attention_backward_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                           o: torch.Tensor, lse: torch.Tensor,
                           grad_o: torch.Tensor, grad_lse: Optional[torch.Tensor],
                           bundle: str, layer: int, scale: float,
                           centroids: Optional[torch.Tensor] = None,
                           block_index_offsets: Optional[torch.Tensor] = None,
                           block_index_cols: Optional[torch.Tensor] = None,
                           head_active: Optional[torch.Tensor] = None
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b = _bundle(bundle, q.device)
    if q.device.type != "cpu":
        if head_active is not None:
            raise NotImplementedError(
                "tessera.attention: the backward of head_active (per-token "
                "head routing) runs on the CPU only: no CUDA backward kernel "
                "skips inactive rows (docs/runtime.md)")
        return _cuda_backward(b, q, k, v, o, lse, grad_o, grad_lse, layer,
                              scale, centroids, _block_index_arrays(
                                  block_index_offsets, block_index_cols))
    qn, kn, vn, on, gn, lsen, gl = _backward_arrays(q, k, v, o, grad_o, lse,
                                                    grad_lse)
    cn = None if centroids is None else \
        centroids.detach().to(torch.float32).contiguous().numpy()
    index = _block_index_arrays(block_index_offsets, block_index_cols)
    dq, dk, dv = b.attention_backward(layer, qn, kn, vn, on, lsen, gn,
                                      dlse=gl, scale=scale, centroids=cn,
                                      block_index=index,
                                      head_active=_head_active_array(
                                          head_active))
    return (torch.from_numpy(dq).to(q.dtype), torch.from_numpy(dk).to(k.dtype),
            torch.from_numpy(dv).to(v.dtype))


def _cuda_backward(b, q, k, v, o, lse, grad_o, grad_lse, layer, scale,
                   centroids, index):
    """The backward on a CUDA context: the runtime's CUDA kernels
    (docs/backward.md, "On CUDA") on the current stream, in the layer's
    dtype; dq, dk and dv contiguous; a block index (host memory) as the
    forward took it (the library refuses what its CUDA backward does not
    take by name). head_active is refused before it (CPU only)."""
    def strided(x):
        # autograd's gradients may be expanded (a sum's: all strides 0):
        # the kernels take any strides with head_dim contiguous.
        x = x.detach()
        return x if x.stride(3) == 1 or x.shape[3] == 1 else x.contiguous()
    dtype = q.dtype
    if grad_o.dtype != dtype:
        grad_o = grad_o.to(dtype)
    cd = None if centroids is None else \
        centroids.detach().to(device=q.device, dtype=torch.float32).contiguous()
    gl = None if grad_lse is None else \
        grad_lse.detach().to(torch.float32).contiguous()
    return b.attention_backward(
        layer, strided(q), strided(k), strided(v), strided(o),
        lse.detach().to(torch.float32).contiguous(), strided(grad_o),
        dlse=gl, scale=scale, centroids=cd, block_index=index)


@_attention_backward_op.register_fake
def _(q, k, v, o, lse, grad_o, grad_lse, bundle, layer, scale, centroids=None,
      block_index_offsets=None, block_index_cols=None, head_active=None):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))


def _setup_context(ctx, inputs, output):
    q, k, v, bundle, layer, scale, centroids, offsets, cols, active = inputs
    o, lse = output
    ctx.save_for_backward(q, k, v, o, lse)
    # block_index heads attend the forward's lists in the backward too, and
    # inactive (row, head) pairs of head_active get no gradient.
    ctx.args = (bundle, layer, scale, centroids, offsets, cols, active)


def _backward(ctx, grad_o, grad_lse):
    q, k, v, o, lse = ctx.saved_tensors
    if grad_o is None:
        grad_o = torch.zeros_like(o)
    dq, dk, dv = torch.ops.tessera.attention_backward(
        q, k, v, o, lse, grad_o, grad_lse, *ctx.args)
    return dq, dk, dv, None, None, None, None, None, None, None


_attention_op.register_autograd(_backward, setup_context=_setup_context)


def _seq_lse_shape(q, packed):
    # [heads, T] for packed queries, else [B, heads, Nq] (docs/runtime.md).
    return (q.shape[2], q.shape[1]) if packed else \
        (q.shape[0], q.shape[2], q.shape[1])


@torch.library.custom_op("tessera::attention_seq", mutates_args=(),
                         device_types=("cpu",))
def _attention_seq_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                      bundle: str, layer: int, scale: float, num_seqs: int,
                      cu_seqlens_q: Optional[torch.Tensor],
                      cu_seqlens_k: Optional[torch.Tensor],
                      seq_lens_k: Optional[torch.Tensor],
                      block_table: Optional[torch.Tensor],
                      q_start: Optional[torch.Tensor],
                      k_start: Optional[torch.Tensor],
                      head_start: int, head_count: int
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4:
            raise ValueError(f"tessera.attention: {name} must be 4-D, got "
                             f"{tuple(x.shape)}")
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise TypeError(f"tessera.attention: unsupported dtype {q.dtype} "
                        f"on the CPU (float32, float16 or bfloat16)")
    b = _bundle(bundle, q.device)
    native = q.dtype == torch.float16 and b.layer_info(layer)["dtype"] == "f16"
    work = q.dtype if q.dtype == torch.float32 or native else torch.float32
    qn, kn, vn = (x.detach().to(work).numpy() for x in (q, k, v))
    # Rows no sequence owns (packed) stay O = 0, LSE = -inf.
    o = torch.zeros(q.shape, dtype=work)
    lse = torch.full(_seq_lse_shape(q, cu_seqlens_q is not None),
                     float("-inf"), dtype=torch.float32)

    b.attention_run(layer, qn, kn, vn, o.numpy(), lse=lse.numpy(),
                    scale=scale, num_seqs=num_seqs,
                    cu_seqlens_q=_seq_ints(cu_seqlens_q, torch.int32),
                    cu_seqlens_k=_seq_ints(cu_seqlens_k, torch.int32),
                    seq_lens_k=_seq_ints(seq_lens_k, torch.int32),
                    block_table=_seq_ints(block_table, torch.int32),
                    q_start=_seq_ints(q_start, torch.int64),
                    k_start=_seq_ints(k_start, torch.int64),
                    head_start=head_start, head_count=head_count)
    return o.to(q.dtype), lse


@_attention_seq_op.register_fake
def _(q, k, v, bundle, layer, scale, num_seqs, cu_seqlens_q, cu_seqlens_k,
      seq_lens_k, block_table, q_start, k_start, head_start, head_count):
    return (q.new_empty(q.shape),
            q.new_empty(_seq_lse_shape(q, cu_seqlens_q is not None),
                        dtype=torch.float32))


def _seq_ints(x, dtype):
    return None if x is None else \
        x.detach().to(device="cpu", dtype=dtype).contiguous().numpy()


@torch.library.custom_op("tessera::attention_seq_backward", mutates_args=(),
                         device_types=("cpu",))
def _attention_seq_backward_op(
        q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, o: torch.Tensor,
        lse: torch.Tensor, grad_o: torch.Tensor,
        grad_lse: Optional[torch.Tensor], bundle: str, layer: int,
        scale: float, num_seqs: int, cu_seqlens_q: Optional[torch.Tensor],
        cu_seqlens_k: Optional[torch.Tensor],
        seq_lens_k: Optional[torch.Tensor],
        block_table: Optional[torch.Tensor], q_start: Optional[torch.Tensor],
        k_start: Optional[torch.Tensor], head_start: int, head_count: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    b = _bundle(bundle, q.device)
    qn, kn, vn, on, gn, lsen, gl = _backward_arrays(q, k, v, o, grad_o, lse,
                                                    grad_lse)
    dq, dk, dv = b.attention_backward(
        layer, qn, kn, vn, on, lsen, gn, dlse=gl, scale=scale,
        num_seqs=num_seqs, cu_seqlens_q=_seq_ints(cu_seqlens_q, torch.int32),
        cu_seqlens_k=_seq_ints(cu_seqlens_k, torch.int32),
        seq_lens_k=_seq_ints(seq_lens_k, torch.int32),
        block_table=_seq_ints(block_table, torch.int32),
        q_start=_seq_ints(q_start, torch.int64),
        k_start=_seq_ints(k_start, torch.int64), head_start=head_start,
        head_count=head_count)
    return (torch.from_numpy(dq).to(q.dtype), torch.from_numpy(dk).to(k.dtype),
            torch.from_numpy(dv).to(v.dtype))


@_attention_seq_backward_op.register_fake
def _(q, k, v, o, lse, grad_o, grad_lse, bundle, layer, scale, num_seqs,
      cu_seqlens_q, cu_seqlens_k, seq_lens_k, block_table, q_start, k_start,
      head_start, head_count):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape))


# The forward's inputs after q, k, v: their positions in `inputs`.
_SEQ_TENSORS = (7, 8, 9, 10, 11, 12)  # cu_seqlens_q .. k_start


def _seq_setup_context(ctx, inputs, output):
    q, k, v, bundle, layer, scale, num_seqs = inputs[:7]
    o, lse = output
    opts = [inputs[i] for i in _SEQ_TENSORS]
    ctx.present = [x is not None for x in opts]
    ctx.save_for_backward(q, k, v, o, lse,
                          *[x for x in opts if x is not None])
    ctx.args = (bundle, layer, scale, num_seqs)
    ctx.heads = (inputs[13], inputs[14])


def _seq_backward(ctx, grad_o, grad_lse):
    """Packed (cu_seqlens), length (seq_lens_k) and head-range calls: the
    library's backward of each sequence (docs/backward.md); it refuses
    paged and positioned calls by name."""
    q, k, v, o, lse, *rest = ctx.saved_tensors
    rest = iter(rest)
    opts = [next(rest) if p else None for p in ctx.present]
    if grad_o is None:
        grad_o = torch.zeros_like(o)
    dq, dk, dv = torch.ops.tessera.attention_seq_backward(
        q, k, v, o, lse, grad_o, grad_lse, *ctx.args, *opts, *ctx.heads)
    return (dq, dk, dv) + (None,) * 12


_attention_seq_op.register_autograd(_seq_backward,
                                    setup_context=_seq_setup_context)


def attention(q, k, v, bundle, layer, scale=0.0, centroids=None, *,
              num_seqs=0, cu_seqlens_q=None, cu_seqlens_k=None,
              seq_lens_k=None, block_table=None, q_start=None, k_start=None,
              head_start=0, head_count=0, block_index=None,
              head_active=None):
    """(o, lse) of `layer` of the bundle at `bundle` (a directory written by
    attn-translate). q: [B, Nq, H, D]; k, v: [B, Nk, Hkv, D]; o like q; lse
    [B, H, Nq] float32. scale 0 selects 1/sqrt(D). centroids: [H, C, D]
    for the layer's routing groups that take the engine's centroids.

    The keyword options are tessera_attention_desc's modes (docs/runtime.md,
    "Calls"): packed queries and keys (cu_seqlens_q / cu_seqlens_k, int32
    [num_seqs + 1]; q, o [1, T, H, D] and lse [H, T]), keys per sequence
    (seq_lens_k), a paged cache (block_table int32 [num_seqs, pages]; k, v
    [num_pages, page_size, Hkv, D]), positions (q_start, k_start int64
    [num_seqs]) and a head range (head_start, head_count: q holds those
    heads, k and v the kv heads they read). Such calls run on the CPU
    (torch.ops.tessera.attention_seq); packed, length and head-range calls
    have a backward (autograd), paged and positioned ones not yet.

    block_index: (offsets, cols), int32 tensors, for the layer's
    #attn.block_index heads (docs/runtime.md, "Caller-provided block
    indices"): offsets [B, H, R + 1], cols the key blocks; dense calls on
    the CPU (autograd attends the same lists).

    head_active: bool or uint8 [B, Nq, H], which heads each query row uses
    (per-token head routing, MoH; docs/runtime.md): inactive pairs give
    o = 0 and lse = -inf and no gradient; dense calls (CUDA tensors: the
    forward of --head-routing bundles, the mask copied to the host; the
    backward on the CPU only)."""
    seq = (num_seqs or head_count or any(
        x is not None for x in (cu_seqlens_q, cu_seqlens_k, seq_lens_k,
                                block_table, q_start, k_start)))
    offsets, cols = (None, None) if block_index is None else block_index
    if not seq:
        return torch.ops.tessera.attention(q, k, v, bundle, int(layer),
                                           float(scale), centroids, offsets,
                                           cols, head_active)
    if head_active is not None:
        raise ValueError("tessera.attention: head_active with per-sequence "
                         "options: tessera.torch passes head routing with "
                         "dense calls only for now (Bundle.attention_run "
                         "takes it with every mode)")
    if block_index is not None:
        raise ValueError("tessera.attention: block_index with per-sequence "
                         "options: tessera.torch passes block indices with "
                         "dense calls only for now (Bundle.attention_run "
                         "takes them with packed calls)")
    if centroids is not None:
        raise ValueError("tessera.attention: centroids with per-sequence "
                         "options: pass dense calls for routing groups that "
                         "take the engine's centroids")
    if q.device.type != "cpu":
        raise NotImplementedError(
            "tessera.attention: per-sequence options run on the CPU from "
            "torch for now (the C API takes them on CUDA with device arrays)")
    return torch.ops.tessera.attention_seq(
        q, k, v, bundle, int(layer), float(scale), int(num_seqs),
        cu_seqlens_q, cu_seqlens_k, seq_lens_k, block_table, q_start,
        k_start, int(head_start), int(head_count))


#===----------------------------------------------------------------------===#
# FlexAttention
#===----------------------------------------------------------------------===#

# Node kinds and axes of the manifest's postfix programs
# (runtime/include/tessera/kernel/Program.h).
_ALL, _NONE, _INTERVALS, _BAND, _PERIODIC, _SHARDS, _GROUPS, _BLOCKS = range(8)
_UNION, _INTERSECT, _DIFFERENCE = 8, 9, 10
_AXIS_K, _AXIS_P, _AXIS_D, _AXIS_NEGD = range(4)


def _layer_manifest(bundle, layer):
    path = os.path.join(os.path.abspath(bundle), "manifest.json")
    with open(path) as f:
        manifest = json.load(f)
    for entry in manifest.get("layers", []):
        if entry.get("index") == layer:
            return entry
    raise ValueError(f"{bundle} has no layer {layer}")


def _program_fn(nodes, data, num_heads, device):
    """A function (h, p, k) -> bool tensor for one group's program."""
    def leaf(n):
        kind, axis, a, b, c, begin, size = n

        def value(p, k):
            return (k, p, k - p, p - k)[axis]
        if kind == _ALL:
            return lambda h, p, k: k == k
        if kind == _NONE:
            return lambda h, p, k: k != k
        if kind == _BAND:
            return lambda h, p, k: (value(p, k) >= a) & (value(p, k) <= b)
        if kind == _INTERVALS:
            ranges = [(data[begin + 2 * i], data[begin + 2 * i + 1])
                      for i in range(size // 2)]

            def intervals(h, p, k):
                x = value(p, k)
                out = x != x
                for lo, hi in ranges:
                    out = out | ((x >= lo) & (x < hi))
                return out
            return intervals
        if kind == _PERIODIC:
            return lambda h, p, k: torch.remainder(value(p, k) - c, a) < b
        if kind == _SHARDS:
            # k in shard (h + c) mod b of blocks of size a.
            return lambda h, p, k: (torch.div(k, a, rounding_mode="floor")
                                    % b) == torch.remainder(h + c, b)
        if kind == _GROUPS:
            def groups(h, p, k):
                s = torch.where(h >= num_heads // 2, b, 0)
                gp = torch.div(p - s, a, rounding_mode="floor")
                gk = torch.div(k - s, a, rounding_mode="floor")
                return gp == gk
            return groups
        if kind == _BLOCKS:
            ids = data[begin:begin + c]
            starts = data[begin + c:begin + 2 * c + 1]
            cols = data[begin + 2 * c + 1:begin + size]
            pairs = [(ids[r], cols[j]) for r in range(c)
                     for j in range(starts[r], starts[r + 1])]
            rows_n = max((r for r, _ in pairs), default=-1) + 1
            cols_n = max((x for _, x in pairs), default=-1) + 1
            table = torch.zeros((max(rows_n, 1), max(cols_n, 1)),
                                dtype=torch.bool, device=device)
            for r, x in pairs:
                table[r, x] = True

            def blocks(h, p, k):
                pb = torch.div(p, a, rounding_mode="floor")
                kb = torch.div(k, b, rounding_mode="floor")
                inside = (pb >= 0) & (pb < rows_n) & (kb < cols_n)
                return inside & table[pb.clamp(0, table.shape[0] - 1),
                                      kb.clamp(0, table.shape[1] - 1)]
            return blocks
        raise ValueError(f"unknown program node kind {kind}")

    stack = []
    for n in nodes:
        kind, arity = n[0], n[1]
        if kind < _UNION:
            stack.append(leaf(n))
            continue
        args = stack[len(stack) - arity:]
        del stack[len(stack) - arity:]
        if kind == _UNION:
            def fn(h, p, k, args=args):
                out = args[0](h, p, k)
                for g in args[1:]:
                    out = out | g(h, p, k)
                return out
        elif kind == _INTERSECT:
            def fn(h, p, k, args=args):
                out = args[0](h, p, k)
                for g in args[1:]:
                    out = out & g(h, p, k)
                return out
        else:
            def fn(h, p, k, args=args):
                return args[0](h, p, k) & ~args[1](h, p, k)
        stack.append(fn)
    if len(stack) != 1:
        raise ValueError("malformed program in the manifest")
    return stack[0]


def mask_mod(bundle, layer, q_len, kv_len, device="cpu"):
    """The layer's pattern as a FlexAttention mask_mod(b, h, q_idx, kv_idx)
    at Nq = q_len, Nk = kv_len (queries bottom-right aligned, as in
    docs/patterns.md); skipped heads allow nothing."""
    entry = _layer_manifest(bundle, layer)
    prog = entry["program"]
    nodes, data, begin = prog["nodes"], prog["data"], prog["group_begin"]
    num_heads = entry["num_heads"]
    groups = [_program_fn(nodes[begin[g]:begin[g + 1]], data, num_heads,
                          device) for g in range(len(begin) - 1)]
    group_of = torch.full((num_heads,), -1, dtype=torch.long, device=device)
    if entry.get("dynamic_groups"):
        heads = sorted(h for g in entry["dynamic_groups"] for h in g["heads"])
        raise ValueError(f"tessera.mask_mod: layer {layer} has dynamic heads "
                         f"{heads}: which keys they see depends on the input")
    for slot, head in enumerate(entry["computed_heads"]):
        group_of[head] = entry["head_groups"][slot]
    shift = int(kv_len) - int(q_len)

    def mod(b, h, q_idx, kv_idx):
        p = q_idx + shift
        g = group_of[h]
        out = kv_idx != kv_idx
        for i, fn in enumerate(groups):
            out = out | ((g == i) & fn(h, p, kv_idx))
        return out
    return mod


def tile_classes(bundle, layer, q_len, kv_len, block_q=128, block_k=128):
    """uint8 tensor [H, ceil(Nq / block_q), ceil(Nk / block_k)]: 0 empty
    (skipped), 1 partial, 2 full, as the kernels' schedule has them."""
    b = _bundle(bundle, torch.device("cpu"))
    return torch.from_numpy(b.tile_classes(layer, q_len, kv_len, block_q,
                                           block_k))


def block_mask(bundle, layer, q_len, kv_len, block_size=128, device="cpu"):
    """The layer's schedule at Nq = q_len, Nk = kv_len as a FlexAttention
    BlockMask (batch 1, every head) with block_size x block_size tiles."""
    from torch.nn.attention.flex_attention import BlockMask
    cls = tile_classes(bundle, layer, q_len, kv_len, block_size, block_size)
    cls = cls.to(device)

    def indices(which):
        hit = cls == which                                  # [H, Tq, Tk]
        num = hit.sum(-1, dtype=torch.int32)
        # Listed blocks first, in key order; the rest of a row is padding.
        order = torch.argsort((~hit).to(torch.int8), dim=-1, stable=True)
        return num[None], order.to(torch.int32)[None]
    kv_num, kv_idx = indices(1)
    full_num, full_idx = indices(2)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx, BLOCK_SIZE=block_size,
        mask_mod=mask_mod(bundle, layer, q_len, kv_len, device),
        seq_lengths=(int(q_len), int(kv_len)))
