"""Fine-tuning with sparse attention on the CPU: a small Llama-shaped model
(random weights, built from a LlamaConfig: no download) whose attention is
Tessera's, through tessera.transformers, trained with AdamW on a synthetic
task it can only learn through attention (each sequence repeats a random
block of --period tokens, so the next token is the one that many positions
back).

    attn-translate examples/training/train_sparse.mlir -o /tmp/train-bundle
    python examples/training/train_sparse.py /tmp/train-bundle [--steps 40]

Before training, the gradients of every parameter are compared with the
same model under PyTorch SDPA with each head's boolean mask built here from
docs/patterns.md's definitions (an independent reference). Then it trains
and prints the loss; it exits 1 if the gradients differ (relative error
above 1e-4: the attention runs in float32) or the loss (the mean of the
last 5 steps) does not fall below log(vocab - 3), the best a model that
ignores the context can do, and 0.3 below its first value.
"""
import argparse
import math
import sys

import torch
import torch.nn.functional as F
from transformers import AttentionInterface, LlamaConfig, LlamaForCausalLM
from transformers.integrations.sdpa_attention import repeat_kv

import tessera.transformers as ttf

HEADS = 4


def s2_layout(h, p, k):
    """causal ∩ (window<before = 8> ∪ strided_shards<shards = 4, block = 4>)"""
    shard = torch.div(k, 4, rounding_mode="floor") % 4 == h % 4
    return (k <= p) & ((k >= p - 8) | shard)


def shifted_groups(h, p, k):
    """causal ∩ shifted_groups<size = 16, shift = 8>: heads >= H / 2 shifted"""
    s = 8 if h >= HEADS // 2 else 0
    same = torch.div(p - s, 16, rounding_mode="floor") == \
        torch.div(k - s, 16, rounding_mode="floor")
    return (k <= p) & same


PATTERNS = {0: s2_layout, 1: shifted_groups}


def reference(module, query, key, value, attention_mask, scaling=None,
              dropout=0.0, **kwargs):
    """SDPA with each head's mask from the definitions above (no padding:
    positions are 0..N-1)."""
    n = query.shape[2]
    p = torch.arange(n).view(-1, 1)
    k = torch.arange(n).view(1, -1)
    mask = torch.stack([PATTERNS[module.layer_idx](h, p, k)
                        for h in range(HEADS)])[None]
    rep = query.shape[1] // key.shape[1]
    o = F.scaled_dot_product_attention(query, repeat_kv(key, rep),
                                       repeat_kv(value, rep),
                                       attn_mask=mask, scale=scaling)
    return o.transpose(1, 2).contiguous(), None


def batch(generator, size, length, vocab, period):
    block = torch.randint(3, vocab, (size, period), generator=generator)
    return block.repeat(1, length // period + 1)[:, :length]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--length", type=int, default=32)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--period", type=int, default=4)
    args = ap.parse_args()
    torch.manual_seed(0)
    AttentionInterface.register("reference_masks", reference)
    name = ttf.register(args.bundle)
    config = LlamaConfig(vocab_size=32, hidden_size=256, intermediate_size=256,
                         num_hidden_layers=2, num_attention_heads=HEADS,
                         num_key_value_heads=2, head_dim=64,
                         max_position_embeddings=args.length,
                         attention_dropout=0.0)
    model = LlamaForCausalLM(config)
    gen = torch.Generator().manual_seed(1)
    failures = 0

    # The gradients of one batch under Tessera and under the reference.
    ids = batch(gen, args.batch, args.length, config.vocab_size, args.period)
    grads = {}
    for impl in (name, "reference_masks"):
        model.set_attn_implementation(impl)
        model.zero_grad()
        model(ids, labels=ids).loss.backward()
        grads[impl] = [p.grad.clone() for p in model.parameters()]
    worst = max(((a - b).abs().max() / b.abs().max().clamp(min=1e-30)).item()
                for a, b in zip(grads[name], grads["reference_masks"]))
    ok = worst <= 1e-4
    failures += not ok
    print(f"gradients against SDPA with the patterns' masks: "
          f"{'ok' if ok else 'FAILED'} (worst relative error {worst:.1e})")

    model.set_attn_implementation(name)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for step in range(args.steps):
        ids = batch(gen, args.batch, args.length, config.vocab_size, args.period)
        loss = model(ids, labels=ids).loss
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if step % 10 == 0 or step == args.steps - 1:
            print(f"step {step}: loss {loss.item():.3f}")
    # Tokens are uniform over vocab - 3 values: without looking back a model
    # cannot do better than log(vocab - 3) nats; below it, attention is at
    # work (the sequences repeat after their first --period tokens).
    floor = math.log(config.vocab_size - 3)
    last = sum(losses[-5:]) / len(losses[-5:])
    ok = last < floor and last < losses[0] - 0.3
    failures += not ok
    print(f"loss fell below the context-free bound {floor:.3f}: "
          f"{'ok' if ok else 'FAILED'} ({losses[0]:.3f} -> {last:.3f}, "
          f"the mean of the last 5 steps)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
