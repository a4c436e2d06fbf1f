#!/usr/bin/env python3
"""Tiles of the MMInference-style layer (patterns/mminference-video.mlir) in
the original order, in a period transpose of the whole sequence and in a
segment grouping: the prompt kept in place and the video segment transposed
on its own (t -> slot by (t - 256) mod 1024 inside [256, N)), MMInference's
layout (docs/PERFORMANCE.md, issue 23). Counted from each head's mask
(numpy, every pair, from the patterns' definitions; not Tessera's code), in
tiles of 64 x 64, for a head of each group. Prints one JSON line per head
and order.

  build/bench-venv/bin/python bench/permute_segments.py [--text 256] [--frames 15]
"""
import argparse
import json

import numpy as np


def masks(n, text, frame):
    q = np.arange(n)[:, None]
    k = np.arange(n)[None, :]
    prompt = (k < text) | (q < text)
    grid = ((k - text) % frame < 32) | ((q - k - text) % frame < 32)
    diagonal = ((k - q) % frame <= 16) | ((q - k) % frame <= 16)
    band = np.abs(k - q) <= 512
    return {"grid heads [0-5]": prompt | grid,
            "frame-diagonal heads [6-11]": prompt | diagonal,
            "local heads [12-15]": prompt | band}


def transpose(n, p, start=0):
    """order[s] = the token at slot s: tokens [start, n) stably sorted by
    (t - start) mod p, tokens before `start` in place."""
    t = np.arange(start, n)
    video = t[np.lexsort((t, (t - start) % p))]
    return np.concatenate([np.arange(start), video])


def tiles(mask, order, tile=64):
    m = mask[np.ix_(order, order)]
    n = m.shape[0]
    rows = -(-n // tile)
    pad = rows * tile - n
    m = np.pad(m, ((0, pad), (0, pad)))
    counts = m.reshape(rows, tile, rows, tile).sum(axis=(1, 3), dtype=np.int64)
    sizes = np.minimum(tile, n - np.arange(rows) * tile)
    area = sizes[:, None] * sizes[None, :]
    visited = int((counts > 0).sum())
    full = int((counts == area).sum())
    return {"visited": visited, "full": full, "partial": visited - full,
            "share": round(visited / counts.size, 4)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--text", type=int, default=256)
    ap.add_argument("--frames", type=int, default=15)
    args = ap.parse_args()
    frame = 1024
    n = args.text + args.frames * frame
    orders = {"original": np.arange(n),
              "period_transpose<1024> (whole sequence)": transpose(n, frame),
              "segments: prompt in place, video transposed":
                  transpose(n, frame, args.text)}
    for head, mask in masks(n, args.text, frame).items():
        for name, order in orders.items():
            row = {"n": n, "heads": head, "order": name,
                   "allowed": round(float(mask.mean()), 4)}
            row.update(tiles(mask, order))
            print(json.dumps(row), flush=True)


main()
