"""Independent reference for --attn-permute's tile counts: writes FileCheck
lines with the visited, full and partial tiles of each case's head group in
the original token order and in each period transpose, at Nq = Nk = N.

  permute_tiles.py CASES N BLOCK_Q BLOCK_K

Allowed keys are built per row from the patterns' definitions in
docs/patterns.md (not from Tessera's semantics), and a period transpose is
the stable sort of the tokens by t mod P (not Tessera's closed form).
"""
import sys


def multi_diagonal(n, stride=0, offsets=(), width=0):
    def keys(q):
        out = set()
        centres = (range(q - (q // stride) * stride - stride, n + stride, stride)
                   if stride else [q + o for o in offsets])
        for c in centres:
            out.update(range(max(0, c - width), min(n, c + width + 1)))
        return out
    return keys


def grid(n, stride, vertical_width=0, slash_width=0, phase=0):
    columns = {k for k in range(n) if (k - phase) % stride < vertical_width}

    def keys(q):
        out = set(columns)
        for j in range(slash_width):
            # (q - k - phase) mod stride == j
            first = (q - phase - j) % stride
            out.update(range(first, n, stride))
        return out
    return keys


def window(n, before=0, after=0):
    return lambda q: set(range(max(0, q - before), min(n, q + after + 1)))


def causal(n):
    return lambda q: set(range(0, q + 1))


def dense(n):
    return lambda q: set(range(n))


def periodic_columns(n, period, width, phase=0):
    columns = {k for k in range(n) if (k - phase) % period < width}
    return lambda q: columns


def strided_shards(n, shards, block, head, offset=0):
    mine = {k for k in range(n) if (k // block) % shards == (head + offset) % shards}
    return lambda q: mine


def horizontal_stripe(n, period, width, phase=0):
    return lambda q: set(range(n)) if (q - phase) % period < width else set()


def union(*parts):
    return lambda q: set().union(*(p(q) for p in parts))


def intersect(*parts):
    return lambda q: set.intersection(*(p(q) for p in parts))


def difference(a, b):
    return lambda q: a(q) - b(q)


def prompt(n, text):
    """A global prompt: its rows see every key, every row sees it."""
    return lambda q: set(range(n)) if q < text else set(range(min(text, n)))


def key_range(n, lo, hi):
    """A vertical stripe of listed keys [lo, hi)."""
    keys = set(range(lo, min(hi, n)))
    return lambda q: keys


def query_range(n, lo, hi):
    """A horizontal stripe of listed queries [lo, hi): they see every key."""
    return lambda q: set(range(n)) if lo <= q < hi else set()


def slots(n, period, prefix=0):
    """slot[t] of every token after sorting stably by t mod period (with a
    prefix: tokens before it in place, the rest sorted by (t - prefix) mod
    period)."""
    head = list(range(min(prefix, n)))
    order = head + sorted(range(len(head), n),
                          key=lambda t: ((t - len(head)) % period, t))
    slot = [0] * n
    for s, t in enumerate(order):
        slot[t] = s
    return slot


def kept_slots(n, period, kept):
    """slot[t] with kept ranges [a0, b0, a1, b1, ...] (interleaved
    segments): the kept tokens first in order, then the others sorted
    stably by (t - e) mod period, e the first token not kept."""
    front = [t for i in range(0, len(kept), 2)
             for t in range(kept[i], min(kept[i + 1], n))]
    inside = set(front)
    others = [t for t in range(n) if t not in inside]
    e = others[0] if others else 0
    order = front + sorted(others, key=lambda t: ((t - e) % period, t))
    slot = [0] * n
    for s, t in enumerate(order):
        slot[t] = s
    return slot


def tiles(keys, n, bq, bk, slot):
    row_blocks, key_blocks = -(-n // bq), -(-n // bk)
    count = [0] * (row_blocks * key_blocks)
    kb = [slot[k] // bk for k in range(n)]
    for q in range(n):
        base = (slot[q] // bq) * key_blocks
        for k in keys(q):
            count[base + kb[k]] += 1
    visited = full = 0
    for i in range(row_blocks):
        for j in range(key_blocks):
            c = count[i * key_blocks + j]
            if c:
                visited += 1
                if c == min(bq, n - i * bq) * min(bk, n - j * bk):
                    full += 1
    return visited, full, visited - full, row_blocks * key_blocks


# title as --attn-permute prints it, the pattern's keys, the periods tried.
def cases(name, n):
    if name == "video-dit":
        return [
            ("group 0 heads [0-5] #attn.multi_diagonal<stride = 1024, "
             "width = 32>", multi_diagonal(n, stride=1024, width=32), [1024]),
            ("group 2 heads [10-13] #attn.grid<stride = 1024, vertical_width "
             "= 64, slash_width = 64>",
             grid(n, 1024, vertical_width=64, slash_width=64), [1024]),
        ]
    if name == "permute":
        return [
            ("group 0 heads [0-1] #attn.multi_diagonal<offsets = [-2048, 0, "
             "2048], width = 8>",
             multi_diagonal(n, offsets=(-2048, 0, 2048), width=8), [2048]),
            ("group 1 heads [2] #attn.union<#attn.window<before = 256, after "
             "= 256>, #attn.vertical_stripe<period = 512, width = 16>>",
             union(window(n, 256, 256), periodic_columns(n, 512, 16)), [512]),
            ("group 4 heads [5] #attn.grid<stride = 100, vertical_width = 3, "
             "slash_width = 5, phase = 7>",
             grid(n, 100, vertical_width=3, slash_width=5, phase=7), [100]),
        ]
    if name == "mminference":
        return [
            ("group 0 heads [0-5] #attn.union<#attn.vertical_stripe<ranges = "
             "[0, 256]>, #attn.horizontal_stripe<ranges = [0, 256]>, "
             "#attn.grid<stride = 1024, vertical_width = 32, slash_width = 32, "
             "phase = 256>>",
             union(prompt(n, 256), grid(n, 1024, vertical_width=32,
                                        slash_width=32, phase=256)),
             [1024, (1024, 256)]),
            ("group 1 heads [6-11] #attn.union<#attn.vertical_stripe<ranges = "
             "[0, 256]>, #attn.horizontal_stripe<ranges = [0, 256]>, "
             "#attn.multi_diagonal<stride = 1024, width = 16>>",
             union(prompt(n, 256), multi_diagonal(n, stride=1024, width=16)),
             [1024, (1024, 256)]),
        ]
    if name == "families":
        return [
            ("group 0 heads [0] #attn.multi_diagonal<stride = 96, width = 3>",
             multi_diagonal(n, stride=96, width=3), [96]),
            ("group 1 heads [1] #attn.grid<stride = 50, vertical_width = 2, "
             "slash_width = 3, phase = 5>",
             grid(n, 50, vertical_width=2, slash_width=3, phase=5), [50]),
            ("group 2 heads [2] #attn.strided_shards<shards = 4, block = 8>",
             strided_shards(n, 4, 8, head=2), [32]),
            ("group 3 heads [3] #attn.vertical_stripe<period = 40, width = 4, "
             "phase = 2>", periodic_columns(n, 40, 4, phase=2), [40]),
            ("group 4 heads [4] #attn.horizontal_stripe<period = 25, width = "
             "2>", horizontal_stripe(n, 25, 2), [25]),
            ("group 5 heads [5] #attn.intersect<#attn.multi_diagonal<stride = "
             "64, width = 8>, #attn.vertical_stripe<period = 32, width = 16>>",
             intersect(multi_diagonal(n, stride=64, width=8),
                       periodic_columns(n, 32, 16)), [32, 64]),
            ("group 6 heads [6] #attn.difference<#attn.multi_diagonal<stride = "
             "64, width = 4>, #attn.horizontal_stripe<period = 64, width = 8>>",
             difference(multi_diagonal(n, stride=64, width=4),
                        horizontal_stripe(n, 64, 8)), [64]),
            # Layer 1: prompts kept in place before one periodic segment.
            ("group 0 heads [0] #attn.union<#attn.vertical_stripe<ranges = "
             "[0, 100]>, #attn.horizontal_stripe<ranges = [0, 100]>, "
             "#attn.grid<stride = 70, vertical_width = 2, slash_width = 3, "
             "phase = 30>>",
             union(key_range(n, 0, 100), query_range(n, 0, 100),
                   grid(n, 70, vertical_width=2, slash_width=3, phase=30)),
             [70, (70, 100)]),
            ("group 1 heads [1] #attn.union<#attn.vertical_stripe<ranges = "
             "[0, 100]>, #attn.multi_diagonal<stride = 96, width = 3>>",
             union(key_range(n, 0, 100), multi_diagonal(n, stride=96, width=3)),
             [96, (96, 100)]),
            ("group 2 heads [2] #attn.difference<#attn.multi_diagonal<stride = "
             "64, width = 4>, #attn.vertical_stripe<ranges = [0, 70]>>",
             difference(multi_diagonal(n, stride=64, width=4),
                        key_range(n, 0, 70)), [64, (64, 70)]),
            ("group 3 heads [3] #attn.intersect<#attn.window<before = 200, "
             "after = 200>, #attn.union<#attn.vertical_stripe<ranges = [0, "
             "100]>, #attn.multi_diagonal<stride = 50, width = 2>>>",
             intersect(window(n, 200, 200),
                       union(key_range(n, 0, 100),
                             multi_diagonal(n, stride=50, width=2))),
             [50, (50, 100)]),
        ]
    if name == "interleaved":
        # patterns/mminference-interleaved.mlir: text [0, 200) and
        # [2248, 2348) between video frames of 1024 tokens.
        text = ((0, 200), (2248, 2348))

        def captions(n):
            keys = set(t for lo, hi in text for t in range(lo, min(hi, n)))
            rows = [set(range(n)) if any(lo <= q < hi for lo, hi in text)
                    else keys for q in range(n)]
            return lambda q: rows[q]
        ranges = "[0, 200, 2248, 2348]"
        stripes = ("#attn.vertical_stripe<ranges = %s>, "
                   "#attn.horizontal_stripe<ranges = %s>" % (ranges, ranges))
        layouts = [1024, (1024, 200), (1024, 2348),
                   ("kept", 1024, (0, 200, 2248, 2348))]
        return [
            ("group 0 heads [0-5] #attn.union<" + stripes + ", #attn.grid<"
             "stride = 1024, vertical_width = 32, slash_width = 32, phase = "
             "200>>",
             union(captions(n), grid(n, 1024, vertical_width=32,
                                     slash_width=32, phase=200)), layouts),
            ("group 1 heads [6-11] #attn.union<" + stripes + ", "
             "#attn.multi_diagonal<stride = 1024, width = 16>>",
             union(captions(n), multi_diagonal(n, stride=1024, width=16)),
             layouts),
        ]
    raise SystemExit("unknown cases " + name)


def main():
    name, n, bq, bk = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), \
        int(sys.argv[4])
    identity = list(range(n))
    for title, keys, periods in cases(name, n):
        print("CHECK: " + title + ":")
        layouts = [("original order", identity)]
        for p in periods:
            if isinstance(p, tuple) and p[0] == "kept":
                layouts.append(("period_transpose<%d, kept = %d ranges>"
                                % (p[1], len(p[2]) // 2),
                                kept_slots(n, p[1], p[2])))
            elif isinstance(p, tuple):
                layouts.append(("period_transpose<%d, prefix = %d>" % p,
                                slots(n, *p)))
            else:
                layouts.append(("period_transpose<%d>" % p, slots(n, p)))
        for label, slot in layouts:
            visited, full, partial, total = tiles(keys, n, bq, bk, slot)
            print("CHECK-NEXT: %s visited %d (%.2f%%) full %d partial %d work"
                  % (label, visited, 100.0 * visited / total, full, partial))


main()
