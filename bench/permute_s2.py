#!/usr/bin/env python3
"""Tiles of an S2-Attention head in the original order, in a token-level
period transpose and in a block-level one (docs/PERFORMANCE.md, issue 23).

The S2 model's sparse heads (patterns/s2-strided.mlir, layer 1) allow, for
query q and key k, k <= q and (q - k <= 512 or block k // 64 in the head's
shard, (k // 64) mod 8 == h mod 8). A token-level period transpose sorts the
tokens by t mod P; a block-level one sorts whole blocks of B tokens by their
block index mod P (tokens keep their order inside a block). For each order
and tile size this prints the visited tiles and their full/partial split,
counted from the mask (numpy, every pair; not Tessera's code).

  build/bench-venv/bin/python bench/permute_s2.py [N] [--head H]
"""
import argparse
import json

import numpy as np


def s2_mask(n, head, shards=8, block=64, before=512, offset=0):
    q = np.arange(n)[:, None]
    k = np.arange(n)[None, :]
    shard = (k // block) % shards == (head + offset) % shards
    return (k <= q) & ((q - k <= before) | shard)


def token_transpose(n, p):
    """order[s] = the token at slot s: tokens stably sorted by t mod p."""
    t = np.arange(n)
    return np.lexsort((t, t % p))


def block_transpose(n, block, p):
    """Whole blocks of `block` tokens stably sorted by block index mod p."""
    blocks = token_transpose(n // block, p)
    return (blocks[:, None] * block + np.arange(block)[None, :]).reshape(-1)


def tiles(mask, order, tile):
    m = mask[np.ix_(order, order)]
    n = m.shape[0]
    t = m.reshape(n // tile, tile, n // tile, tile).sum(axis=(1, 3))
    visited = int((t > 0).sum())
    full = int((t == tile * tile).sum())
    return {"visited": visited, "full": full, "partial": visited - full,
            "share": round(visited / t.size, 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("n", type=int, nargs="?", default=8192)
    ap.add_argument("--head", type=int, default=0)
    args = ap.parse_args()
    n = args.n
    mask = s2_mask(n, args.head)
    orders = {
        "original": np.arange(n),
        "token period_transpose<512>": token_transpose(n, 512),
        "block transpose (64-token blocks, period 8)":
            block_transpose(n, 64, 8),
        "block transpose (64-token blocks, period 16)":
            block_transpose(n, 64, 16),
    }
    for tile in (64, 128):
        for name, order in orders.items():
            row = {"n": n, "head": args.head, "tile": tile, "order": name,
                   "allowed": round(float(mask.mean()), 4)}
            row.update(tiles(mask, order, tile))
            print(json.dumps(row))


main()
