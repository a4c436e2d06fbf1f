"""Partitions of the shipped models (distributed-balance.test): for every
layer of each bundle given, at 32K tokens over 8 ranks (and its first layer
over 64), partition() keeps every rank's modelled work within 10% of the
mean, while a contiguous split of a causal layer does not (so the check
can fail); the partition is a plain list covering the sequence once."""

import sys

import tessera
import tessera.distributed as td

N = 32 << 10


def covers(part, n):
    ranges = sorted(r for rank in part for r in rank)
    return ranges[0][0] == 0 and ranges[-1][1] == n and all(
        a[1] == b[0] for a, b in zip(ranges, ranges[1:]))


def main():
    ctx = tessera.Context("cpu")
    for path in sys.argv[1:]:
        b = ctx.load(path)
        name = path.rstrip("/").split("/")[-1]
        worst, contiguous_worst, plain = 0.0, 0.0, True
        for i, layer in enumerate(b.layers()):
            for w in (8, 64) if i == 0 else (8,):
                p = td.partition(b, layer, N, w)
                plain &= isinstance(p, list) and all(
                    isinstance(r, list) and all(
                        isinstance(x, tuple) and len(x) == 2 for x in r)
                    for r in p) and covers(p, N)
                worst = max(worst, td.balance_ratio(
                    td.modelled_work(b, layer, N, p)))
                c = td.partition(b, layer, N, w, "contiguous")
                contiguous_worst = max(contiguous_worst, td.balance_ratio(
                    td.modelled_work(b, layer, N, c)))
        print(f"{name}: picked max/mean {worst:.2f} "
              f"{'ok' if worst <= 1.10 else 'FAILED'}; contiguous "
              f"{contiguous_worst:.2f}; plain lists "
              f"{'ok' if plain else 'FAILED'}")


if __name__ == "__main__":
    main()
