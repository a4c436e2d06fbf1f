"""Hugging Face transformers integration: a bundle's layers as an
`attn_implementation`.

    import tessera.transformers
    name = tessera.transformers.register("build/bundles/my-llama")
    model = AutoModelForCausalLM.from_config(config, attn_implementation=name)
    # or model.set_attn_implementation(name); then forward / generate as usual

`register` adds an attention function to transformers' `AttentionInterface`
and, under the same name, SDPA's mask builder to its `AttentionMaskInterface`
(a custom implementation gets no mask otherwise). Model layer
`module.layer_idx` runs bundle layer `layers[layer_idx]` (by default the same
index) through `tessera.torch.attention`; the layer's heads, kv heads (GQA) and
head_dim must be the model's.

The layer's pattern replaces the model's causal mask. The mask transformers
builds is read only for where each sequence's tokens are: it must be a causal
mask with padding (left or right padding in a batch, a static cache's unfilled
slots, generation's decode steps). Each sequence's valid keys and queries are
taken out of the batch and run as one sequence of their own, so the pattern
sees the sequence's own positions (0 at its first valid token, as the
position_ids that `generate` makes) and its queries bottom-right aligned; the
rows of padding tokens output 0. A mask that is anything else (a sliding
window of the model, a bidirectional or custom 4-D mask, an additive bias) is
refused with a ValueError, as are dropout, softcapping and attention sinks.

Each padded sequence is one call of the op; batches without padding are one
call. The mask is read with data-dependent operations: under torch.compile
the function runs with graph breaks, and fullgraph=True fails. On GPUs,
generate with a static cache compiles the model (untested):
`disable_compile=True` keeps it eager.
"""

import os
import re

import torch

import tessera.torch as _tt

__all__ = ["register"]


def register(bundle, name=None, layers=None):
    """Registers the bundle directory `bundle` (written by attn-translate) as
    a transformers attention implementation and returns its name, to pass as
    `attn_implementation`. name: default "tessera_" and the directory's name.
    layers: which bundle layer a model layer runs: None (the same index), a
    dict {model layer: bundle layer} or a function of the model layer."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
    if not isinstance(bundle, (str, os.PathLike)):
        raise TypeError("tessera.transformers.register: bundle is the path of "
                        "a bundle directory (str or os.PathLike), got "
                        f"{type(bundle).__name__}")
    path = os.path.abspath(os.fspath(bundle))
    if not os.path.isfile(os.path.join(path, "manifest.json")):
        raise ValueError(f"tessera.transformers.register: {path} is not a "
                         f"bundle directory (no manifest.json)")
    if name is None:
        name = "tessera_" + re.sub(r"\W", "_", os.path.basename(path))
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        # transformers reads "/" as a hub kernel and "|" as a prefix.
        raise ValueError(f"tessera.transformers.register: name {name!r} must "
                         f"be letters, digits, '_', '.' or '-'")
    if layers is not None and not callable(layers) and \
            not isinstance(layers, dict):
        raise TypeError("tessera.transformers.register: layers is None, a "
                        "dict or a function")

    def attention(module, query, key, value, attention_mask, scaling=None,
                  dropout=0.0, **kwargs):
        return _forward(path, layers, module, query, key, value,
                        attention_mask, scaling, dropout, kwargs)

    AttentionInterface.register(name, attention)
    AttentionMaskInterface.register(name, sdpa_mask)
    return name


#===----------------------------------------------------------------------===#
# The attention function
#===----------------------------------------------------------------------===#


def _forward(path, layers, module, query, key, value, mask, scaling, dropout,
             kwargs):
    """transformers' attention signature: query [B, H, Nq, D], key and value
    [B, Hkv, Nk, D]; returns ([B, Nq, H, D], None)."""
    _refuse_unsupported(module, dropout, kwargs)
    layer = _bundle_layer(layers, module)
    _check_layer(path, layer, module.layer_idx, query, key)
    batch, heads, nq, dim = query.shape
    nk = key.shape[2]
    q, k, v = (x.transpose(1, 2) for x in (query, key, value))
    scale = 0.0 if scaling is None else float(scaling)
    seqs = _sequences(mask, batch, heads, nq, nk, query.device)
    if all(isinstance(x, slice) for s in seqs for x in s) and \
            all(s == seqs[0] for s in seqs):
        # The same rows and keys in every sequence: one call.
        rows, keys = seqs[0]
        o, _ = _tt.attention(q[:, rows], k[:, keys], v[:, keys], path, layer,
                             scale)
        if rows == slice(0, nq):
            return o, None
        out = q.new_zeros((batch, nq, heads, dim))
        out[:, rows] = o
        return out, None
    out = q.new_zeros((batch, nq, heads, dim))
    for b, (rows, keys) in enumerate(seqs):
        if rows is None:
            continue  # only padding: its rows stay 0
        o, _ = _tt.attention(q[b:b + 1, rows], k[b:b + 1, keys],
                             v[b:b + 1, keys], path, layer, scale)
        out[b, rows] = o[0]
    return out, None


def _refuse_unsupported(module, dropout, kwargs):
    """Errors for what the bundle's attention cannot compute."""
    if dropout:
        raise ValueError(f"tessera.transformers: attention dropout "
                         f"({dropout}) is not supported (inference only: "
                         f"call model.eval())")
    for arg in ("softcap", "s_aux", "sinks", "position_bias"):
        if kwargs.get(arg) is not None:
            raise ValueError(f"tessera.transformers: the model passes "
                             f"'{arg}', which Tessera's attention does not "
                             f"compute")
    causal = kwargs.get("is_causal")
    if causal is None:
        causal = getattr(module, "is_causal", True)
    if not causal:
        raise ValueError("tessera.transformers: the model's attention is not "
                         "causal (an encoder?); only decoder attention, whose "
                         "causal mask the pattern replaces, is supported")


def _bundle_layer(layers, module):
    """The bundle layer that model layer module.layer_idx runs."""
    index = getattr(module, "layer_idx", None)
    if index is None:
        raise ValueError(f"tessera.transformers: {type(module).__name__} has "
                         f"no layer_idx, so its bundle layer is unknown")
    if layers is None:
        return int(index)
    if isinstance(layers, dict):
        if index not in layers:
            raise ValueError(f"tessera.transformers: the layer map has no "
                             f"entry for model layer {index}")
        return int(layers[index])
    return int(layers(index))


def _check_layer(path, layer, model_layer, query, key):
    """The bundle layer must have the model layer's heads and head_dim."""
    bundle = _tt._bundle(path, query.device)
    if layer not in bundle.layers():
        raise ValueError(f"tessera.transformers: the bundle {path} has no "
                         f"layer {layer} (it has {bundle.layers()})")
    info = bundle.layer_info(layer)
    for what, want, got in (("num_heads", info["num_heads"], query.shape[1]),
                            ("num_kv_heads", info["num_kv_heads"],
                             key.shape[1]),
                            ("head_dim", info["head_dim"], query.shape[3])):
        if want != got:
            raise ValueError(f"tessera.transformers: bundle layer {layer} has "
                             f"{what} = {want}, model layer {model_layer} "
                             f"{got}")


#===----------------------------------------------------------------------===#
# Reading the mask
#===----------------------------------------------------------------------===#


def _allowed(mask, batch, heads, nq, nk):
    """The mask as bool [B, Nq, Nk] (True: attended), or an error."""
    if mask.dim() != 4 or mask.shape[2] != nq or mask.shape[3] != nk or \
            mask.shape[0] not in (1, batch) or mask.shape[1] not in (1, heads):
        raise ValueError(f"tessera.transformers: attention mask of shape "
                         f"{tuple(mask.shape)}, expected [{batch} or 1, 1, "
                         f"{nq}, {nk}]")
    if mask.dtype == torch.bool:
        allowed = mask
    elif mask.is_floating_point():
        # An additive mask: 0 attends, the dtype's minimum (or -inf) not;
        # anything else is a bias the kernels do not add.
        allowed = mask == 0
        low = torch.finfo(mask.dtype).min / 2
        if not bool(((mask == 0) | (mask <= low)).all()):
            raise ValueError("tessera.transformers: the attention mask adds "
                             "a bias (values other than 0 and -inf), which "
                             "Tessera cannot apply")
    else:
        raise ValueError(f"tessera.transformers: attention mask of dtype "
                         f"{mask.dtype} (bool or floating point expected)")
    if allowed.shape[1] > 1:
        if not bool((allowed == allowed[:, :1]).all()):
            raise ValueError("tessera.transformers: the attention mask "
                             "differs between heads; the pattern decides "
                             "per head")
    return allowed[:, 0].expand(batch, nq, nk)


def _run(index):
    """A slice for sorted indices that are consecutive, else the indices."""
    if index.numel() and int(index[-1]) - int(index[0]) + 1 == index.numel():
        return slice(int(index[0]), int(index[-1]) + 1)
    return index


# The last mask read and what it gave: every layer of a forward gets the same
# mask object. One tuple, replaced whole, so that threads never see a mask
# paired with another's result.
_memo = None


def _sequences(mask, batch, heads, nq, nk, device):
    """Per sequence (query rows, keys), each a slice or an index tensor; rows
    None for a sequence without a valid query."""
    global _memo
    if mask is None:
        # SDPA's rule for no mask: one query sees every key; Nq > 1 queries
        # are causal from slot 0 (a static cache's later slots are unfilled).
        if nq > nk:
            raise ValueError(f"tessera.transformers: {nq} queries against "
                             f"{nk} keys without a mask")
        keys = slice(0, nk if nq == 1 or nq == nk else nq)
        return [(slice(0, nq), keys)] * batch
    if not isinstance(mask, torch.Tensor):
        raise ValueError(f"tessera.transformers: attention mask of type "
                         f"{type(mask).__name__} (a tensor expected: the "
                         f"implementation registers SDPA's mask builder)")
    key = (mask._version, batch, heads, nq, nk, str(device))
    memo = _memo
    if memo is not None and memo[0] is mask and memo[1] == key:
        return memo[2]
    seqs = _read_mask(mask, batch, heads, nq, nk, device)
    _memo = (mask, key, seqs)
    return seqs


def _read_mask(mask, batch, heads, nq, nk, device):
    allowed = _allowed(mask, batch, heads, nq, nk).to(device)
    # valid[b, k]: key k holds a token of sequence b. A causal mask with
    # padding lets query i (at cache slot base + i) see exactly the valid
    # keys up to its slot; a valid query sees its own slot, its row's last
    # key, so base = max(last - i) over the rows that see anything.
    valid = allowed.any(1)                                       # [B, Nk]
    kpos = torch.arange(nk, device=device)
    qpos = torch.arange(nq, device=device)
    last = torch.where(allowed, kpos, -1).amax(2)                # [B, Nq]
    seen = last >= 0
    base = torch.where(seen, last - qpos, -1).amax(1)            # [B]
    base = torch.where(seen.any(1), base, nk - nq)
    rebuilt = (kpos[None, None, :] <= (base[:, None, None] +
                                       qpos[None, :, None])) & \
        valid[:, None, :]
    bad = ~(rebuilt == allowed).all(2).all(1) | (base < 0) | \
        (base > nk - nq)
    if bool(bad.any()):
        b = int(bad.nonzero()[0])
        raise ValueError(
            f"tessera.transformers: the attention mask of sequence {b} is not "
            f"a causal mask with padding (each query seeing the valid keys up "
            f"to its own position), which is all Tessera can map; the model's "
            f"own mask (a sliding window, chunks, bidirectional parts or a "
            f"custom 4-D mask) would be dropped")
    # The valid queries are the sequence's last valid keys (no valid key
    # lies after the last query's slot): bottom-right aligned.
    qvalid = valid.gather(1, (base[:, None] + qpos[None, :]).clamp(0, nk - 1))
    out = []
    for b in range(batch):
        rows = qvalid[b].nonzero()[:, 0]
        if rows.numel() == 0:
            out.append((None, None))
            continue
        out.append((_run(rows), _run(valid[b].nonzero()[:, 0])))
    return out
