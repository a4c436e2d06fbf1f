"""Modelled balance and exchange of tessera.distributed's partitions
(docs/PERFORMANCE.md, "Context parallelism").

usage: distributed_balance.py BUNDLES_DIR [--bytes]

BUNDLES_DIR holds attn-translate's bundles of patterns/*.mlir (one folder a
model, named after the file). For each model, sequence length (128K to 1M
tokens) and world size (8, 64): the worst layer's max / mean modelled work
per rank (tessera.distributed.modelled_work: visited tiles, partial tiles
weighted 1.15; tiles of 64 up to 256K tokens, 256 beyond) for a contiguous
split, the zigzag and the balanced partition. Dynamic heads are left out of
the work (their tiles depend on the input; such layers run by Ulysses,
where every rank has the whole sequence for its heads). With --bytes
instead: the key/value shards a ring sends for chosen layers (and head
ranges) at 1M tokens under each partition and the one partition("auto")
picks, with its max / mean work, against a dense ring's W (W - 1); tiles of
256 (a 256-token tile with an allowed pair makes its two shards a pair).
"""

import os
import sys
import time

import tessera
import tessera.distributed as td

LENGTHS = (128 << 10, 256 << 10, 512 << 10, 1 << 20)
WORLDS = (8, 64)


def block_for(n):
    """The tile edge of the work model: the kernels' 64 up to 256K tokens;
    256 beyond, where counting every 64 x 64 tile of the strided-shard
    layers (thousands of runs a query block) would take hours here."""
    return 64 if n <= (256 << 10) else 256


def balance(bundles):
    print("| model | tokens | ranks | tile | contiguous | zigzag | balanced |")
    print("|---|---|---|---|---|---|---|")
    for name, b in bundles:
        for n in LENGTHS:
            for w in WORLDS:
                blk = block_for(n)
                worst = {"contiguous": 0, "zigzag": 0, "balanced": 0}
                for layer in b.layers():
                    for s in worst:
                        p = td.partition(b, layer, n, w, s, block=blk)
                        worst[s] = max(worst[s], td.balance_ratio(
                            td.modelled_work(b, layer, n, p, block=blk)))
                print(f"| {name} | {n >> 10}K | {w} | {blk} | "
                      f"{worst['contiguous']:.2f} | {worst['zigzag']:.2f} | "
                      f"{worst['balanced']:.2f} |", flush=True)


def exchange(bundles):
    """Shards a ring sends at 1M tokens over the picked partition, for
    whole layers and for head ranges (a Ulysses or tensor-parallel rank
    that holds only a layer's A-shape heads)."""
    chosen = {"llama3-8b-sparse": ((0, None, "causal"),
                                   (2, None, "A-shape, window, causal"),
                                   (2, (0, 5), "heads 0-4: A-shape")),
              "video-dit": ((0, None, "diagonals, window, stripe, grid"),),
              "s2-strided": ((1, None, "causal strided shards"),)}
    n = 1 << 20
    print("| model | layer | heads | ranks | dense ring | contiguous | "
          "zigzag | balanced | picked |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, b in bundles:
        for layer, heads, what in chosen.get(name, ()):
            for w in WORLDS:
                cells = []
                for s in ("contiguous", "zigzag", "balanced", "auto"):
                    p = td.partition(b, layer, n, w, s, heads=heads,
                                     block=256)
                    sent = td.exchanged_shards(
                        td.needed_pairs(b, layer, n, p, heads, block=256))
                    work = td.balance_ratio(
                        td.modelled_work(b, layer, n, p, heads, block=256))
                    cells.append(f"{sent} ({work:.2f})")
                print(f"| {name} | {layer} | {what} | {w} | {w * (w - 1)} "
                      f"| " + " | ".join(cells) + " |", flush=True)


def main():
    root = sys.argv[1]
    bundles = []
    ctx = tessera.Context("cpu")
    for name in sorted(os.listdir(root)):
        bundles.append((name, ctx.load(os.path.join(root, name))))
    t = time.time()
    if "--bytes" in sys.argv:
        exchange(bundles)
    else:
        balance(bundles)
    print(f"({time.time() - t:.0f} s)")


if __name__ == "__main__":
    main()
