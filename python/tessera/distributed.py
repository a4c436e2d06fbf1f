"""Context parallelism on torch.distributed: one layer's attention over a
sequence split between processes (docs/distributed.md).

    import torch.distributed as dist, tessera, tessera.distributed as td
    bundle = tessera.Context("cpu").load("build/bundles/llama3-8b-sparse")
    part = td.partition(bundle, layer=2, seq_len=N, world_size=W)
    q, k, v = (x[:, td.indices(part, rank)] for x in (Q, K, V))  # the shard
    o, lse = td.ring_attention(bundle, 2, q, k, v, part)       # this shard's

Three ways to run it, each a function and a `ContextParallelAttention`
module:
  * ring_attention: each rank keeps its queries; key/value shards travel
    (step t: rank r receives the shard of rank r - t straight from it) and
    the partial results are merged by their log-sum-exp;
  * allgather_attention: every rank receives the key/value shards its
    queries visit at once, then attends once over the keys in global order;
  * ulysses_attention: an all-to-all turns sequence shards into head shards
    (each rank: the whole sequence for a range of heads), Tessera runs the
    heads, a second all-to-all turns them back; `usp_attention` nests a ring
    inside (xDiT's USP).
Sparse-aware: `pair_tiles` asks the bundle (tessera_bundle_visited_tiles)
which (query range, key range) pairs have a visited tile; a rank computes
only those, and a shard that no rank's queries visit is never sent (the
`stats` dict counts the bytes). Partitions are plain lists: per rank, its
[start, end) token ranges in global order; `partition` picks one per layer
from the modelled work (contiguous, zigzag, or chunks balanced greedily).

Forward only: the backward (docs/backward.md) does not take the positioned
and head-range calls these make yet. CPU contexts (gloo); inputs are torch
CPU tensors [B, n, H, D] (k, v [B, n, Hkv, D]); the runtime computes in
float32 and the output has q's dtype. Layers with dynamic heads (their index
is estimated from the whole sequence's queries and keys) run only through
Ulysses, which gives the single-process result exactly; the ring and the
all-gather refuse them.
"""

import weakref

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["contiguous", "zigzag", "balanced", "partition", "indices",
           "modelled_work", "balance_ratio", "exchanged_shards", "pair_tiles",
           "needed_pairs", "ring_attention",
           "allgather_attention", "ulysses_attention", "usp_attention",
           "ContextParallelAttention"]

# The schedule's tiles for the work model and the skip tests: the kernels'
# query block (64 rows) and key block.
BLOCK = 64
# A partial tile's cost relative to a full one: the mask work of the CUDA
# kernels' partial tiles (PERFORMANCE.md: 1.09-1.19 at head_dim 64).
PARTIAL_COST = 1.15


#===- Partitions -----------------------------------------------------------===#

def _bounds(seq_len, chunks):
    return [i * seq_len // chunks for i in range(chunks + 1)]


def contiguous(seq_len, world_size):
    """Rank r holds tokens [r N / W, (r + 1) N / W)."""
    b = _bounds(seq_len, world_size)
    return [[(b[r], b[r + 1])] for r in range(world_size)]


def zigzag(seq_len, world_size):
    """2W chunks; rank r holds chunks r and 2W - 1 - r (Megatron's and
    Transformer Engine's split for causal layers)."""
    b = _bounds(seq_len, 2 * world_size)
    return [[(b[r], b[r + 1]), (b[2 * world_size - 1 - r],
                                b[2 * world_size - r])]
            for r in range(world_size)]


def _tiles_work(tiles, heads=None):
    """Modelled work of visited_tiles' [H, 2] counts of `heads` ((start,
    count); None: all), dynamic heads (-1) left out: their tiles depend on
    the input."""
    if heads is not None:
        tiles = tiles[heads[0]:heads[0] + heads[1]]
    t = tiles[tiles[:, 0] >= 0]
    return float(PARTIAL_COST * t[:, 0].sum() + t[:, 1].sum())


def _blocks(lo, hi, block):
    return lo // block, -(-hi // block)


def _range_work(bundle, layer, seq_len, lo, hi, heads, block):
    """Modelled work of queries [lo, hi) against every key."""
    if lo >= hi:
        return 0.0
    tk = -(-seq_len // block)
    return _tiles_work(bundle.visited_tiles(
        layer, seq_len, seq_len, _blocks(lo, hi, block), (0, tk), block,
        block), heads)


def chunk_work(bundle, layer, seq_len, chunks, heads=None, block=BLOCK):
    """Modelled work of each chunk of queries [b[i], b[i + 1]) (b =
    _bounds(seq_len, chunks)) against every key."""
    b = _bounds(seq_len, chunks)
    return [_range_work(bundle, layer, seq_len, b[i], b[i + 1], heads, block)
            for i in range(chunks)]


def balanced(bundle, layer, seq_len, world_size, chunks_per_rank=4,
             heads=None, block=BLOCK):
    """W * chunks_per_rank equal chunks, dealt by modelled work: in each
    round the W heaviest chunks left go to the ranks, the heaviest to the
    least loaded (every rank gets the same number of tokens, +-1 per
    chunk). For a causal layer with 2 chunks a rank this is the zigzag."""
    c = world_size * chunks_per_rank
    b = _bounds(seq_len, c)
    work = chunk_work(bundle, layer, seq_len, c, heads, block)
    order = sorted(range(c), key=lambda i: (-work[i], i))
    load = [0.0] * world_size
    owned = [[] for _ in range(world_size)]
    for start in range(0, c, world_size):
        ranks = sorted(range(world_size), key=lambda r: (load[r], r))
        for r, i in zip(ranks, order[start:start + world_size]):
            owned[r].append(i)
            load[r] += work[i]
    return [_merge([(b[i], b[i + 1]) for i in sorted(o)]) for o in owned]


def _merge(ranges):
    """Adjacent ranges joined, empty ones dropped."""
    out = []
    for lo, hi in ranges:
        if lo == hi:
            continue
        if out and out[-1][1] == lo:
            out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def modelled_work(bundle, layer, seq_len, part, heads=None, block=BLOCK):
    """Each rank's modelled work (visited tiles, partial ones weighted by
    PARTIAL_COST) for its queries against every key, over `heads` ((start,
    count); None: every head)."""
    return [sum(_range_work(bundle, layer, seq_len, lo, hi, heads, block)
                for lo, hi in ranges) for ranges in part]


def balance_ratio(work):
    """max / mean of per-rank work (1.0 where there is none)."""
    mean = sum(work) / len(work)
    return max(work) / mean if mean > 0 else 1.0


def exchanged_shards(need):
    """Shards a ring sends under need[r][s] (r != s)."""
    return sum(need[r][s] for r in range(len(need)) for s in range(len(need))
               if r != s)


# partition("auto") takes the partitions within this max / mean of the
# modelled work and, of those, the one that exchanges the fewest shards.
BALANCE_TARGET = 1.10


def partition(bundle, layer, seq_len, world_size, strategy="auto",
              chunks_per_rank=4, heads=None, block=BLOCK):
    """A partition for `layer` (its `heads` range, if given: a Ulysses or
    tensor-parallel rank's heads): "contiguous", "zigzag", "balanced", or
    "auto": of the three, those whose max / mean modelled work is within
    BALANCE_TARGET, the one whose ring exchanges the fewest shards (ties
    to the simpler; none within: the best balanced). A plain list:
    part[r] = rank r's [start, end) ranges in global order."""
    makers = {"contiguous": lambda: contiguous(seq_len, world_size),
              "zigzag": lambda: zigzag(seq_len, world_size),
              "balanced": lambda: balanced(bundle, layer, seq_len,
                                           world_size, chunks_per_rank,
                                           heads, block)}
    if strategy != "auto":
        if strategy not in makers:
            raise ValueError(f"strategy must be auto, contiguous, zigzag or "
                             f"balanced, got {strategy!r}")
        return makers[strategy]()
    scored = []
    for order, name in enumerate(("contiguous", "zigzag", "balanced")):
        p = makers[name]()
        r = balance_ratio(modelled_work(bundle, layer, seq_len, p, heads,
                                        block))
        scored.append((r, order, p))
    within = [x for x in scored if x[0] <= BALANCE_TARGET]
    if len(within) <= 1:
        return min(scored, key=lambda x: (x[0], x[1]))[2]
    return min(within, key=lambda x: (exchanged_shards(needed_pairs(
        bundle, layer, seq_len, x[2], heads, block)), x[1]))[2]


def indices(part, rank):
    """The global token indices of rank's shard, in its order."""
    return torch.cat([torch.arange(lo, hi) for lo, hi in part[rank]]) \
        if part[rank] else torch.zeros(0, dtype=torch.long)


def _seq_len(part):
    """The sequence a partition splits: up to its last range's end."""
    return max((hi for ranges in part for _, hi in ranges), default=0)


def _check_partition(part, seq_len, world_size):
    if len(part) != world_size:
        raise ValueError(f"the partition has {len(part)} ranks, the group "
                         f"{world_size}")
    covered = sorted(r for ranges in part for r in ranges)
    at = 0
    for lo, hi in covered:
        if lo != at or hi < lo:
            raise ValueError(f"the partition's ranges must cover [0, "
                             f"{seq_len}) once; found ({lo}, {hi}) at {at}")
        at = hi
    if at != seq_len:
        raise ValueError(f"the partition covers [0, {at}), the sequence has "
                         f"{seq_len} tokens")


#===- Which pairs to compute and exchange ----------------------------------===#

def pair_tiles(bundle, layer, seq_len, q_range, k_range, heads=None,
               block=BLOCK):
    """Visited tiles of query positions q_range x key positions k_range
    (summed over `heads`, a (start, count) range, or every head; a dynamic
    head counts as visiting every tile). Tiles that straddle a range's end
    count for both sides: 0 means no allowed pair."""
    if q_range[0] >= q_range[1] or k_range[0] >= k_range[1]:
        return 0
    t = bundle.visited_tiles(layer, seq_len, seq_len,
                             _blocks(*q_range, block),
                             _blocks(*k_range, block), block, block)
    if heads is not None:
        t = t[heads[0]:heads[0] + heads[1]]
    if (t < 0).any():
        return 1 << 62
    return int(t.sum())


_NEED_CACHE = weakref.WeakKeyDictionary()  # bundle -> {key: need}


def needed_pairs(bundle, layer, seq_len, part, heads=None, block=BLOCK):
    """need[r][s]: rank r's queries visit a tile of rank s's keys. Kept per
    (bundle, layer, length, partition, heads): every layer call of a
    forward pass asks again."""
    cache = _NEED_CACHE.setdefault(bundle, {})
    heads = tuple(heads) if heads is not None else None
    key = (layer, seq_len, tuple(tuple(r) for r in part), heads, block)
    if key not in cache:
        w = len(part)
        if len(cache) > 256:
            cache.clear()
        cache[key] = [
            [any(pair_tiles(bundle, layer, seq_len, a, b, heads, block)
                 for a in part[r] for b in part[s]) for s in range(w)]
            for r in range(w)]
    return cache[key]


#===- The local calls -------------------------------------------------------===#

def _np32(x):
    return np.ascontiguousarray(x.detach().to(torch.float32).numpy())


def _run(bundle, layer, q, k, v, q_start=None, k_start=None, heads=None):
    """One tessera_attention_run on float32 numpy copies: (o, lse) torch
    float32, o [B, n, h, D], lse [B, h, n]. q_start, k_start: global
    positions of row 0 (None: a dense, bottom-right call); heads: (start,
    count) of the layer's heads q holds."""
    qn, kn, vn = _np32(q), _np32(k), _np32(v)
    b, n, h = qn.shape[:3]
    o = np.zeros_like(qn)
    lse = np.zeros((b, h, n), np.float32)
    kw = {}
    if q_start is not None:
        kw["q_start"] = np.full(b, q_start, np.int64)
        kw["k_start"] = np.full(b, k_start, np.int64)
    if heads is not None:
        kw["head_start"], kw["head_count"] = heads
    bundle.attention_run(layer, qn, kn, vn, o, lse, **kw)
    return torch.from_numpy(o), torch.from_numpy(lse)


def _merge_lse(acc_o, acc_lse, o, lse):
    """Merges (o, lse) into the running result of the same rows (disjoint
    key sets): O = sum_i exp(lse_i - lse) O_i, lse = log sum_i exp(lse_i).
    Rows without keys on both sides stay 0 and -inf."""
    new = torch.logaddexp(acc_lse, lse)
    safe = torch.where(torch.isinf(new), torch.zeros_like(new), new)
    wa = torch.exp(acc_lse - safe).transpose(1, 2).unsqueeze(-1)
    wb = torch.exp(lse - safe).transpose(1, 2).unsqueeze(-1)
    return acc_o * wa + o * wb, new


def _local_rows(part, rank):
    """(global range, local offset) of each of rank's ranges."""
    out, at = [], 0
    for lo, hi in part[rank]:
        out.append(((lo, hi), at))
        at += hi - lo
    return out


def _layer(bundle, layer, q):
    info = bundle.layer_info(layer)
    if q.dim() != 4:
        raise ValueError(f"q must be [batch, seq, heads, head_dim], got "
                         f"shape {tuple(q.shape)}")
    return info


def _check_shard(q, k, v, part, rank):
    """q, k, v hold rank's rows of the partition, in its order."""
    n = sum(hi - lo for lo, hi in part[rank])
    for name, x in (("q", q), ("k", k), ("v", v)):
        if x.dim() != 4 or x.shape[1] != n or x.shape[0] != q.shape[0]:
            raise ValueError(
                f"{name} must be [batch, {n}, heads, head_dim] (rank {rank}'s "
                f"{n} tokens of the partition), got shape {tuple(x.shape)}")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have one shape, got "
                         f"{tuple(k.shape)} and {tuple(v.shape)}")


def _refuse_dynamic(info, layer, how):
    if info["num_dynamic_heads"]:
        raise ValueError(
            f"layer {layer} has dynamic heads: their index is estimated from "
            f"the whole sequence's queries and keys, which {how} never has "
            f"on one rank; use ulysses_attention (each rank sees the whole "
            f"sequence for its heads: the single-process result exactly)")


def _stats_init(stats):
    if stats is not None:
        stats.update(bytes_sent=0, bytes_dense=0, shards_sent=0,
                     shards_skipped=0, pairs_computed=0, pairs_skipped=0)
    return stats


def _count(stats, key, n=1):
    if stats is not None:
        stats[key] += n


def _attend_shard(bundle, layer, seq_len, q, part, rank, k, v, src, heads,
                  acc, stats):
    """Rank's queries against the keys of rank src's ranges, merged into
    acc = [o, lse] range by range, skipping pairs without a visited tile."""
    for (qr, qoff), (kr, koff) in ((a, b) for a in _local_rows(part, rank)
                                   for b in _local_rows(part, src)):
        if not pair_tiles(bundle, layer, seq_len, qr, kr, heads):
            _count(stats, "pairs_skipped")
            continue
        _count(stats, "pairs_computed")
        qs = slice(qoff, qoff + qr[1] - qr[0])
        ks = slice(koff, koff + kr[1] - kr[0])
        o, lse = _run(bundle, layer, q[:, qs], k[:, ks], v[:, ks], qr[0],
                      kr[0], heads)
        acc[0][:, qs], acc[1][:, :, qs] = _merge_lse(
            acc[0][:, qs], acc[1][:, :, qs], o, lse)


#===- Ring -----------------------------------------------------------------===#

def _group_info(group):
    return dist.get_world_size(group), dist.get_rank(group)


def _global(group, r):
    return r if group is None else dist.get_global_rank(group, r)


def _post(kv, shapes, dst, src, send, recv, group, stats, tag):
    """Posts this step's send of kv to dst and receive from src (where
    needed); returns (requests, receive buffer or None)."""
    reqs, buf = [], None
    if send:
        reqs.append(dist.isend(kv, _global(group, dst), group=group, tag=tag))
        _count(stats, "bytes_sent", kv.numel() * kv.element_size())
        _count(stats, "shards_sent")
    else:
        _count(stats, "shards_skipped")
    if recv:
        buf = torch.empty(shapes[src], dtype=kv.dtype)
        reqs.append(dist.irecv(buf, _global(group, src), group=group,
                               tag=tag))
    return reqs, buf


def ring_attention(bundle, layer, q, k, v, part, group=None, heads=None,
                   stats=None):
    """This rank's (o, lse) of `layer` over the whole sequence, by a ring.
    q [B, n, h, D], k, v [B, n, hkv, D]: this rank's shard (part[rank]'s
    ranges, in order); heads: (start, count) when q holds a range of the
    layer's heads (k, v the kv heads they read). Returns o (q's dtype) and
    lse [B, h, n] float32. stats (a dict): bytes sent, bytes a dense ring
    sends, shards sent and skipped, (query range, key range) pairs computed
    and skipped, on this rank."""
    info = _layer(bundle, layer, q)
    _refuse_dynamic(info, layer, "a ring")
    w, rank = _group_info(group)
    seq_len = _seq_len(part)
    _check_partition(part, seq_len, w)
    _check_shard(q, k, v, part, rank)
    need = needed_pairs(bundle, layer, seq_len, part, heads)
    _stats_init(stats)
    kv = torch.cat([k, v], dim=2).contiguous()  # one message a shard
    lens = [sum(hi - lo for lo, hi in ranges) for ranges in part]
    shapes = [(kv.shape[0], n) + tuple(kv.shape[2:]) for n in lens]
    if stats is not None:  # a dense ring: this shard to every other rank
        stats["bytes_dense"] = kv.numel() * kv.element_size() * (w - 1)
    acc = [torch.zeros(q.shape, dtype=torch.float32),
           torch.full((q.shape[0], q.shape[2], q.shape[1]), -float("inf"))]
    hkv = k.shape[2]

    def post(t):
        if t >= w:
            return [], None
        dst, src = (rank + t) % w, (rank - t) % w
        return _post(kv, shapes, dst, src, need[dst][rank], need[rank][src],
                     group, stats, t)

    pending = post(1)
    _attend_shard(bundle, layer, seq_len, q, part, rank, k, v, rank, heads,
                  acc, stats)
    for t in range(1, w):
        reqs, buf = pending
        for r in reqs:
            r.wait()
        pending = post(t + 1)  # the next shard travels while this one runs
        src = (rank - t) % w
        if buf is None:
            _count(stats, "pairs_skipped",
                   len(part[rank]) * len(part[src]))
            continue
        _attend_shard(bundle, layer, seq_len, q, part, rank, buf[:, :, :hkv],
                      buf[:, :, hkv:], src, heads, acc, stats)
    return acc[0].to(q.dtype), acc[1]


#===- All-gather -----------------------------------------------------------===#

def _gather_needed(kv, part, need, seq_len, group, stats):
    """The key/value shards this rank's queries need, laid out in global
    order ([B, seq_len, ...]; shards not needed stay zero): a dense
    all-gather where every pair is needed and shards are equal,
    point-to-point sends of the needed shards otherwise."""
    w, rank = _group_info(group)
    lens = [sum(hi - lo for lo, hi in ranges) for ranges in part]
    shards = [None] * w
    shards[rank] = kv
    nbytes = kv.numel() * kv.element_size()
    if all(all(row) for row in need) and len(set(lens)) == 1:
        shards = [torch.empty_like(kv) for _ in range(w)]
        dist.all_gather(shards, kv, group=group)
        _count(stats, "bytes_sent", nbytes * (w - 1))
        _count(stats, "shards_sent", w - 1)
    else:
        ops = []
        for t in range(1, w):
            dst, src = (rank + t) % w, (rank - t) % w
            if need[dst][rank]:
                ops.append(dist.P2POp(dist.isend, kv, _global(group, dst),
                                      group))
                _count(stats, "bytes_sent", nbytes)
                _count(stats, "shards_sent")
            else:
                _count(stats, "shards_skipped")
            if need[rank][src]:
                shards[src] = torch.empty(
                    (kv.shape[0], lens[src]) + tuple(kv.shape[2:]),
                    dtype=kv.dtype)
                ops.append(dist.P2POp(dist.irecv, shards[src],
                                      _global(group, src), group))
        for r in dist.batch_isend_irecv(ops) if ops else []:
            r.wait()
    full = torch.zeros((kv.shape[0], seq_len) + tuple(kv.shape[2:]),
                       dtype=kv.dtype)
    for s in range(w):
        if shards[s] is not None:
            for (lo, hi), off in _local_rows(part, s):
                full[:, lo:hi] = shards[s][:, off:off + hi - lo]
    return full


def allgather_attention(bundle, layer, q, k, v, part, group=None, heads=None,
                        stats=None):
    """Like ring_attention, but every key/value shard this rank's queries
    visit arrives at once (and only those); then one call per query range
    against the keys in global order (shards not received are zeros the
    schedule never visits): no merge."""
    info = _layer(bundle, layer, q)
    _refuse_dynamic(info, layer, "an all-gather of keys")
    w, rank = _group_info(group)
    seq_len = _seq_len(part)
    _check_partition(part, seq_len, w)
    _check_shard(q, k, v, part, rank)
    need = needed_pairs(bundle, layer, seq_len, part, heads)
    _stats_init(stats)
    kv = torch.cat([k, v], dim=2).contiguous()
    if stats is not None:
        stats["bytes_dense"] = kv.numel() * kv.element_size() * (w - 1)
    full = _gather_needed(kv, part, need, seq_len, group, stats)
    hkv = k.shape[2]
    o = torch.zeros(q.shape, dtype=torch.float32)
    lse = torch.full((q.shape[0], q.shape[2], q.shape[1]), -float("inf"))
    for (lo, hi), off in _local_rows(part, rank):
        rows = slice(off, off + hi - lo)
        _count(stats, "pairs_computed")
        o[:, rows], lse[:, :, rows] = _run(
            bundle, layer, q[:, rows], full[:, :, :hkv], full[:, :, hkv:],
            lo, 0, heads)
    return o.to(q.dtype), lse


#===- Ulysses --------------------------------------------------------------===#

def _head_split(num_heads, world_size):
    b = _bounds(num_heads, world_size)
    return [(b[r], b[r + 1] - b[r]) for r in range(world_size)]


def _kv_range(heads, group_size):
    h0, n = heads
    lo, hi = h0 // group_size, (h0 + n - 1) // group_size + 1
    return lo, hi


def _all_to_all(chunks, recv_shapes, dtype, group, stats):
    """all_to_all_single of flat chunks (chunks[j] to rank j); returns the
    received chunks reshaped to recv_shapes[i]."""
    send = torch.cat([c.reshape(-1) for c in chunks])
    sizes_in = [c.numel() for c in chunks]
    sizes_out = [int(np.prod(s)) for s in recv_shapes]
    recv = torch.empty(sum(sizes_out), dtype=dtype)
    dist.all_to_all_single(recv, send, sizes_out, sizes_in, group=group)
    if stats is not None:
        _, rank = _group_info(group)
        stats["bytes_sent"] += (send.numel() - sizes_in[rank]) * \
            send.element_size()
    return [x.reshape(s) for x, s in zip(recv.split(sizes_out), recv_shapes)]


def _to_heads(q, k, v, part, split, kvr, h0, kv0, group, stats):
    """The first all-to-all: this rank's rows of every head range go to the
    range's rank; returns this rank's heads over the group's rows in global
    order (q, k, v) and the pieces [(range, source rank, its offset)]."""
    w, rank = _group_info(group)
    lens = [sum(hi - lo for lo, hi in ranges) for ranges in part]
    b, d = q.shape[0], q.shape[3]
    nq, (klo, khi) = split[rank][1], kvr[rank]
    nkv = khi - klo
    chunks = [torch.cat([q[:, :, s - h0:s - h0 + n].reshape(-1),
                         k[:, :, lo - kv0:hi - kv0].reshape(-1),
                         v[:, :, lo - kv0:hi - kv0].reshape(-1)])
              for (s, n), (lo, hi) in zip(split, kvr)]
    got = _all_to_all(chunks, [(b * n * d * (nq + 2 * nkv),) for n in lens],
                      q.dtype, group, stats)
    qs, ks, vs = [], [], []
    for x, n in zip(got, lens):
        a, c = b * n * d * nq, b * n * d * nkv
        qs.append(x[:a].reshape(b, n, nq, d))
        ks.append(x[a:a + c].reshape(b, n, nkv, d))
        vs.append(x[a + c:].reshape(b, n, nkv, d))
    pieces = sorted(((lo, hi), s, off) for s in range(w)
                    for (lo, hi), off in _local_rows(part, s))

    def gather(xs):
        return torch.cat([xs[s][:, off:off + hi - lo]
                          for (lo, hi), s, off in pieces], dim=1)
    return gather(qs), gather(ks), gather(vs), pieces


def _to_sequence(o, lse, q, part, pieces, split, h0, group, stats):
    """The second all-to-all: each rank's rows of this rank's heads (o and
    lse in one float32 message) go back; returns this rank's rows of every
    head, o [B, n, h, D] float32 and lse [B, h, n]."""
    w, rank = _group_info(group)
    rows_of, pos = {}, 0
    for (lo, hi), s, off in pieces:
        rows_of.setdefault(s, []).append((off, pos, pos + hi - lo))
        pos += hi - lo
    back = []
    for s in range(w):
        spans = sorted(rows_of.get(s, []))  # in rank s's own order
        idx = torch.cat([torch.arange(p0, p1) for _, p0, p1 in spans]) \
            if spans else torch.zeros(0, dtype=torch.long)
        back.append(torch.cat([o[:, idx].to(torch.float32).reshape(-1),
                               lse[:, :, idx].reshape(-1)]))
    b, n, d = q.shape[0], q.shape[1], q.shape[3]
    got = _all_to_all(back, [(b * n * ns * (d + 1),) for _, ns in split],
                      torch.float32, group, stats)
    out = torch.empty(q.shape, dtype=torch.float32)
    out_lse = torch.empty((b, q.shape[2], n), dtype=torch.float32)
    for (s0, ns), x in zip(split, got):
        out[:, :, s0 - h0:s0 - h0 + ns] = x[:b * n * ns * d].reshape(
            b, n, ns, d)
        out_lse[:, s0 - h0:s0 - h0 + ns] = x[b * n * ns * d:].reshape(
            b, ns, n)
    return out, out_lse


def ulysses_attention(bundle, layer, q, k, v, part, group=None, heads=None,
                      stats=None, inner=None):
    """This rank's (o, lse) by Ulysses: the group's sequence shards become
    head shards (rank j: heads _head_split(h, W)[j] of the whole sequence,
    with the kv heads they read), Tessera runs them (a dense call with a
    head range: dynamic heads too), and the results go back. heads: the
    layer's head range q holds (None: all). inner(q, k, v, heads, ranges):
    what runs on the gathered rows instead (usp_attention's ring); ranges
    are the global ranges those rows hold, in order."""
    info = _layer(bundle, layer, q)
    w, rank = _group_info(group)
    h0, h = heads if heads is not None else (0, info["num_heads"])
    g = info["num_heads"] // info["num_kv_heads"]
    if h < w:
        raise ValueError(f"Ulysses over {w} ranks needs at least {w} heads; "
                         f"this rank holds {h}")
    if len(part) != w:
        raise ValueError(f"the partition has {len(part)} ranks, the group "
                         f"{w}")
    _check_shard(q, k, v, part, rank)
    if q.shape[2] != h:
        raise ValueError(f"q holds {q.shape[2]} heads; heads says {h}")
    _stats_init(stats)
    split = [(h0 + s, n) for s, n in _head_split(h, w)]
    kvr = [_kv_range(s, g) for s in split]
    qg, kg, vg, pieces = _to_heads(q, k, v, part, split, kvr, h0, h0 // g,
                                   group, stats)
    ranges = _merge([r for r, _, _ in pieces])
    if inner is not None:
        o, lse = inner(qg, kg, vg, split[rank], ranges)
    elif ranges != [(0, qg.shape[1])]:
        raise ValueError("the group's ranges do not form the whole "
                         "sequence: nest a ring (usp_attention)")
    else:
        o, lse = _run(bundle, layer, qg, kg, vg, heads=split[rank])
        _count(stats, "pairs_computed")
    out, out_lse = _to_sequence(o, lse, q, part, pieces, split, h0, group,
                                stats)
    return out.to(q.dtype), out_lse


def usp_attention(bundle, layer, q, k, v, part, ulysses_group, ring_group,
                  stats=None):
    """xDiT's USP: Ulysses inside `ulysses_group` (heads), a ring over
    `ring_group` (sequence) inside it. part: per global rank, its ranges;
    the ring's shard of a Ulysses group is the union of its members'."""
    ring_w, ring_rank = _group_info(ring_group)
    uly_w = dist.get_world_size(ulysses_group)
    # The ring's partition: ring rank i's shard is the union of the ranges
    # of the Ulysses group of the ring's member i.
    members = [dist.get_global_rank(ring_group, i) for i in range(ring_w)]
    ring_part = []
    for m in members:
        peers = _peers(m, ulysses_group, uly_w)
        ring_part.append(_merge(sorted(r for p in peers for r in part[p])))
    uly_part = [part[p] for p in _peers(dist.get_rank(), ulysses_group,
                                        uly_w)]
    ring_stats = {} if stats is not None else None

    def inner(qg, kg, vg, heads, ranges):
        if ranges != ring_part[ring_rank]:
            raise ValueError("the Ulysses group's ranges are not the ring "
                             "partition's shard")
        return ring_attention(bundle, layer, qg, kg, vg, ring_part,
                              ring_group, heads, ring_stats)

    o, lse = ulysses_attention(bundle, layer, q, k, v, uly_part,
                               ulysses_group, None, stats, inner)
    if stats is not None:
        stats["ring"] = ring_stats
    return o, lse


def _peers(global_rank, group, size):
    """The global ranks of `group` when global_rank is a member: group
    rank order. Every rank builds every Ulysses group with new_group, so
    the peers of another rank come from the group list it was made from
    (usp_groups)."""
    for ranks in _USP_GROUPS.get(id(group), []):
        if global_rank in ranks:
            return ranks
    raise ValueError("ulysses_group must come from usp_groups()")


_USP_GROUPS = {}


def usp_groups(ulysses_size):
    """(ulysses_group, ring_group) of this rank for a world of
    ulysses_size x (W / ulysses_size) ranks: Ulysses groups of consecutive
    ranks, rings across them (xDiT's layout). Every rank must call it."""
    w, rank = dist.get_world_size(), dist.get_rank()
    if ulysses_size < 1 or w % ulysses_size:
        raise ValueError(f"ulysses_size {ulysses_size} must divide the "
                         f"world size {w}")
    uly = [list(range(i, i + ulysses_size)) for i in range(0, w, ulysses_size)]
    ring = [list(range(j, w, ulysses_size)) for j in range(ulysses_size)]
    mine_u = mine_r = None
    for ranks in uly:
        g = dist.new_group(ranks)
        if rank in ranks:
            mine_u = g
    for ranks in ring:
        g = dist.new_group(ranks)
        if rank in ranks:
            mine_r = g
    _USP_GROUPS[id(mine_u)] = uly
    return mine_u, mine_r


#===- A module -------------------------------------------------------------===#

class ContextParallelAttention(torch.nn.Module):
    """One layer's context-parallel attention as a module: forward(q, k, v)
    -> (o, lse) for this rank's shard (part[rank]'s rows). mode: "ring",
    "allgather" or "ulysses"; part: a partition (None: partition(bundle,
    layer, seq_len, W) on the first call, kept for later calls of the same
    length). stats: the last call's counts."""

    def __init__(self, bundle, layer, mode="ring", part=None, group=None):
        super().__init__()
        runs = {"ring": ring_attention, "allgather": allgather_attention,
                "ulysses": ulysses_attention}
        if mode not in runs:
            raise ValueError(f"mode must be ring, allgather or ulysses, got "
                             f"{mode!r}")
        self.bundle, self.layer, self.run = bundle, layer, runs[mode]
        self.part, self.group, self.stats = part, group, {}

    def forward(self, q, k, v, seq_len=None):
        if self.part is None:
            if seq_len is None:
                raise ValueError("seq_len is needed to pick the partition")
            self.part = partition(self.bundle, self.layer, seq_len,
                                  dist.get_world_size(self.group))
        return self.run(self.bundle, self.layer, q, k, v, self.part,
                        self.group, stats=self.stats)
