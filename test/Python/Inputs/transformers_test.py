"""tessera.transformers on the CPU: a small Llama-shaped model (random
weights, built from a LlamaConfig) running a bundle's attention, against the
same model with SDPA and the equivalent explicit mask: prefill, batches with
left and right padding, a decode step after right padding, a chunked prefill
and generate with the dynamic and the static cache. Logits agree to 1e-4 (f32) and generated
tokens are equal.

The reference of the causal layer is transformers' own SDPA attention with
its mask. For the sparse layers the test builds each head's boolean mask
itself, from the patterns' definitions (docs/patterns.md) evaluated at each
sequence's positions (the position_ids the model gets, which count from a
sequence's first valid token), and with transformers' padding mask.

  transformers_test.py BUNDLE_DIR [--broken padding|unfilled]

--broken runs a deliberately wrong integration (padding ignored; a static
cache's unfilled slots attended), which must fail.
"""
import sys

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import (repeat_kv,
                                                       sdpa_attention_forward)
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

import tessera.transformers as ttf

bundle = sys.argv[1]
broken = sys.argv[3] if len(sys.argv) > 3 and sys.argv[2] == "--broken" \
    else None
torch.manual_seed(0)
failures = 0


def check(name, ok, detail=""):
    global failures
    print(f"{name}: {'ok' if ok else 'FAILED'} {detail}".rstrip())
    failures += 0 if ok else 1


#===----------------------------------------------------------------------===#
# The reference: the patterns of transformers_model.mlir, by definition
#===----------------------------------------------------------------------===#


def causal(h, p, k):
    return k <= p


def window(before):
    return lambda h, p, k: (k <= p) & (k >= p - before)


def sink(n):
    return lambda h, p, k: (k < n) & (k <= p)


def a_shape(n, before):
    return lambda h, p, k: sink(n)(h, p, k) | window(before)(h, p, k)


def strided_local(h, p, k):
    # causal ∩ (window<before = 1> ∪ strided_shards<shards = 2, block = 2>)
    shard = torch.div(k, 2, rounding_mode="floor") % 2 == h % 2
    return causal(h, p, k) & (window(1)(h, p, k) | shard)


PATTERNS = {1: [causal, a_shape(2, 3), window(4), sink(3)],
            2: [strided_local] * 4}

# Each layer's key positions so far, per sequence: every forward appends its
# queries' positions (the dynamic cache appends its keys, the static cache
# fills its slots in order); run() starts anew.
key_positions = {}


def reference(module, query, key, value, attention_mask, scaling=None,
              dropout=0.0, **kwargs):
    layer = module.layer_idx
    if layer not in PATTERNS:
        return sdpa_attention_forward(module, query, key, value,
                                      attention_mask, dropout=dropout,
                                      scaling=scaling, **kwargs)
    batch, heads, nq, _ = query.shape
    nk = key.shape[2]
    pq = kwargs["position_ids"].expand(batch, nq)
    if layer not in key_positions:
        key_positions[layer] = pq
    else:
        key_positions[layer] = torch.cat([key_positions[layer], pq], 1)
    pk = key_positions[layer]
    filled = pk.shape[1]
    pk = F.pad(pk, (0, nk - filled), value=1 << 30)         # unfilled slots
    h = torch.arange(heads)[None, :, None, None]
    allowed = torch.stack([fn(h[:, i:i + 1], pq[:, None, :, None],
                              pk[:, None, None, :])[:, 0]
                           for i, fn in enumerate(PATTERNS[layer])], 1)
    allowed = allowed & attention_mask & \
        (torch.arange(nk) < filled)[None, None, None, :]
    rep = heads // key.shape[1]
    o = F.scaled_dot_product_attention(query, repeat_kv(key, rep),
                                       repeat_kv(value, rep),
                                       attn_mask=allowed, scale=scaling)
    o = torch.where(allowed.any(-1, keepdim=True), o, torch.zeros_like(o))
    return o.transpose(1, 2).contiguous(), None


def materialised_mask(*args, **kwargs):
    """SDPA's mask, always built (the reference reads its padding)."""
    kwargs["allow_is_causal_skip"] = False
    return sdpa_mask(*args, **kwargs)


AttentionInterface.register("reference_sdpa", reference)
AttentionMaskInterface.register("reference_sdpa", materialised_mask)

#===----------------------------------------------------------------------===#
# The model and the integration under test
#===----------------------------------------------------------------------===#

name = ttf.register(bundle)
print(f"registered: {name}")

if broken == "padding":
    # Every sequence's keys from its first slot to the last filled one, its
    # queries all rows: padding attended, positions counted from the buffer.
    read = ttf._read_mask

    def all_slots(mask, batch, heads, nq, nk, device):
        seqs = read(mask, batch, heads, nq, nk, device)
        out = []
        for rows, keys in seqs:
            stop = nk if keys is None else keys.stop \
                if isinstance(keys, slice) else int(keys[-1]) + 1
            out.append((slice(0, nq), slice(0, stop)))
        return out
    ttf._read_mask = all_slots
elif broken == "unfilled":
    # Every key slot, filled or not.
    read = ttf._sequences
    ttf._sequences = lambda mask, batch, heads, nq, nk, device: [
        (rows, slice(0, nk)) for rows, _ in read(mask, batch, heads, nq, nk,
                                                 device)]

config = LlamaConfig(vocab_size=97, hidden_size=256, intermediate_size=512,
                     num_hidden_layers=3, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=64,
                     max_position_embeddings=64, pad_token_id=0,
                     bos_token_id=1, eos_token_id=2)
model = LlamaForCausalLM(config).eval()
# Larger weights than the initialisation's, so that attention is far from
# uniform and a wrong key changes the logits visibly.
with torch.no_grad():
    for layer in model.model.layers:
        for proj in (layer.self_attn.q_proj, layer.self_attn.k_proj):
            proj.weight.normal_(0, 0.15)


def run(impl, fn):
    key_positions.clear()
    model.set_attn_implementation(impl)
    with torch.no_grad():
        return fn()


def compare(what, fn, valid=None):
    """Logits of fn() under Tessera and under the reference."""
    ours = run(name, fn)
    ref = run("reference_sdpa", fn)
    keep = torch.ones(ours.shape[:-1], dtype=torch.bool) if valid is None \
        else valid
    err = (ours[keep] - ref[keep]).abs().max().item()
    check(f"{what}: logits", err < 1e-4, f"(max error {err:.1e})")
    return ours


def batch(lengths, left, total=20):
    """Random prompts of the given lengths padded to `total`, with their
    attention mask and position ids (counted from each first valid token)."""
    ids = torch.zeros(len(lengths), total, dtype=torch.long)
    mask = torch.zeros(len(lengths), total, dtype=torch.long)
    for b, n in enumerate(lengths):
        cols = slice(total - n, total) if left else slice(0, n)
        ids[b, cols] = torch.randint(3, config.vocab_size, (n,))
        mask[b, cols] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, pos


# The sparse heads matter at these lengths: the reference is far from the
# model with causal attention everywhere.
ids, _, _ = batch([20], left=True)
gap = (run("reference_sdpa", lambda: model(ids).logits) -
       run("sdpa", lambda: model(ids).logits)).abs().max().item()
check("the sparse heads change the logits", gap > 1e-2, f"(by {gap:.1e})")

lengths = [20, 13, 7]
for left in (True, False):
    side = "left" if left else "right"
    ids, mask, pos = batch(lengths, left)
    logits = compare(f"prefill, {side} padding",
                     lambda: model(ids, attention_mask=mask,
                                   position_ids=pos).logits,
                     valid=mask.bool())
    # Each padded sequence gives the logits it gives alone: the pattern
    # sees the sequence's own positions, whatever the padding.
    worst = 0.0
    for b, n in enumerate(lengths):
        cols = mask[b].bool()
        alone = run(name, lambda: model(ids[b:b + 1, cols]).logits[0])
        worst = max(worst, (logits[b, cols] - alone).abs().max().item())
    check(f"prefill, {side} padding: each sequence as alone", worst < 1e-4,
          f"(max error {worst:.1e})")

# A decode step after a right-padded prefill: each sequence's keys are its
# prompt and its new token, with padding between them.
ids, mask, pos = batch(lengths, left=False)


def decode_after_right_padding():
    out = model(ids, attention_mask=mask, position_ids=pos, use_cache=True)
    step = torch.randint(3, config.vocab_size, (len(lengths), 1))
    mask2 = torch.cat([mask, torch.ones(len(lengths), 1, dtype=torch.long)], 1)
    pos2 = torch.tensor(lengths)[:, None]
    torch.manual_seed(1)
    return model(step, attention_mask=mask2, position_ids=pos2,
                 cache=out.cache).logits


torch.manual_seed(1)
compare("decode step after right padding", decode_after_right_padding)

# Chunked prefill of a left-padded batch: 12 slots, then 8 against the
# cache (the shortest sequence has no token in the first chunk).
ids, mask, pos = batch(lengths, left=True)


def chunked_prefill():
    out = model(ids[:, :12], attention_mask=mask[:, :12],
                position_ids=pos[:, :12], use_cache=True)
    return model(ids[:, 12:], attention_mask=mask, position_ids=pos[:, 12:],
                 cache=out.cache).logits


compare("chunked prefill, left padding", chunked_prefill,
        valid=mask[:, 12:].bool())

# Generation: greedy, with the dynamic and the static cache, from a prompt
# alone and from a left-padded batch.
for cache in ("dynamic", "static"):
    for what, lens in (("one prompt", [20]), ("left-padded batch", lengths)):
        ids, mask, _ = batch(lens, left=True)
        extra = {"cache_implementation": "static"} if cache == "static" \
            else {}

        def generate():
            return model.generate(ids, attention_mask=mask, max_new_tokens=8,
                                  do_sample=False, output_logits=True,
                                  return_dict_in_generate=True,
                                  pad_token_id=0, eos_token_id=None, **extra)
        ours = run(name, generate)
        ref = run("reference_sdpa", generate)
        err = max((a - b).abs().max().item()
                  for a, b in zip(ours.logits, ref.logits))
        check(f"generate, {cache} cache, {what}: logits of every step",
              len(ours.logits) == len(ref.logits) == 8 and err < 1e-4,
              f"(max error {err:.1e})")
        check(f"generate, {cache} cache, {what}: tokens",
              torch.equal(ours.sequences, ref.sequences))

# What Tessera cannot map is refused, naming the reason.
def dropout(p):
    for layer in model.model.layers:
        layer.self_attn.attention_dropout = p


ids, mask, pos = batch([9, 5], left=True, total=9)
windowed = torch.ones(2, 1, 9, 9, dtype=torch.bool).tril() & \
    ~torch.ones(9, 9, dtype=torch.bool).tril(-3)
for what, fn in (
        ("a sliding-window 4-D mask",
         lambda: model(ids, attention_mask=windowed)),
        ("an additive bias", lambda: model(ids, attention_mask=torch.where(
            windowed, torch.tensor(0.5), torch.tensor(float("-inf"))))),
        ("dropout", lambda: (dropout(0.1), model.train(), model(ids))[2])):
    try:
        run(name, fn)
        check(f"refused: {what}", False, "(no error)")
    except ValueError as e:
        check(f"refused: {what}", "tessera.transformers" in str(e), f"({e})")
    finally:
        dropout(0.0)
        model.eval()

# A model whose layers do not match the bundle's, and a layer map to a
# layer the bundle lacks.
mha = LlamaForCausalLM(LlamaConfig(**{**config.to_dict(),
                                      "num_key_value_heads": 4})).eval()
mha.set_attn_implementation(name)
missing = ttf.register(bundle, name="tessera_missing_layer",
                       layers=lambda i: i + 5)
for what, fn, want in (
        ("kv heads differ from the bundle layer's", lambda: mha(ids),
         "num_kv_heads = 2"),
        ("a layer the bundle lacks",
         lambda: run(missing, lambda: model(ids)), "no layer 5")):
    try:
        with torch.no_grad():
            fn()
        check(f"refused: {what}", False, "(no error)")
    except ValueError as e:
        check(f"refused: {what}", want in str(e), f"({e})")

print(f"{failures} failures")
sys.exit(1 if failures else 0)
