"""tessera.distributed on gloo (distributed.test): every mode against the
single-process call, on 2 and 4 processes.

usage: distributed_test.py WORLD DIST_BUNDLE TINY_MIX DYNAMIC_BUNDLE

Each rank computes the single-process result itself (one dense call over
the whole sequence) and compares its shard's output and LSE; the launcher
prints one line a case with the worst error over the ranks. The skip test
counts the bytes each rank sends and compares the total with the shards a
rank's queries need by the patterns' definitions (docs/patterns.md),
evaluated here in numpy, independently of the schedule.
"""

import os
import socket
import sys
import traceback

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

TOL = 3e-5  # float32 merges of a few partial results


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def shard(x, part, rank):
    import tessera.distributed as td
    return x[:, td.indices(part, rank)].contiguous()


def reference(bundle, layer, q, k, v):
    """The single-process call: o, lse over the whole sequence."""
    o = np.zeros(q.shape, np.float32)
    lse = np.zeros((q.shape[0], q.shape[2], q.shape[1]), np.float32)
    bundle.attention_run(layer, q.numpy(), k.numpy(), v.numpy(), o, lse)
    return torch.from_numpy(o), torch.from_numpy(lse)


def error(o, lse, ro, rlse, part, rank, heads=None):
    import tessera.distributed as td
    idx = td.indices(part, rank)
    ro, rlse = ro[:, idx], rlse[:, :, idx]
    if heads is not None:
        ro = ro[:, :, heads[0]:heads[0] + heads[1]]
        rlse = rlse[:, heads[0]:heads[0] + heads[1]]
    fin = torch.isfinite(rlse)
    if not torch.equal(fin, torch.isfinite(lse)):
        return float("inf")
    e = (o - ro).abs().max().item() if o.numel() else 0.0
    if fin.any():
        e = max(e, (lse[fin] - rlse[fin]).abs().max().item())
    return e


def inputs(bundle, layer, batch, n, seed):
    info = bundle.layer_info(layer)
    g = torch.Generator().manual_seed(seed)
    h, hkv, d = info["num_heads"], info["num_kv_heads"], info["head_dim"]
    return (torch.randn(batch, n, h, d, generator=g),
            torch.randn(batch, n, hkv, d, generator=g),
            torch.randn(batch, n, hkv, d, generator=g))


def allowed_mask(layer, n):
    """The dist bundle's layers by their definitions (docs/patterns.md):
    [H, n, n] bool, Nq = Nk = n."""
    qi = np.arange(n)[:, None]
    ki = np.arange(n)[None, :]
    causal = ki <= qi
    def a_shape(sink, before):
        return (ki < sink) & causal | (ki >= qi - before) & causal
    if layer == 0:
        return np.stack([a_shape(4, 24)] * 4)
    if layer == 1:
        return np.stack([causal] * 4)
    raise ValueError(layer)


def needed_shards(mask, part):
    """How many (query rank, key rank != it) pairs have an allowed pair."""
    import tessera.distributed as td
    w = len(part)
    idx = [td.indices(part, r).numpy() for r in range(w)]
    any_head = mask.any(0)
    return sum(bool(any_head[np.ix_(idx[r], idx[s])].any())
               for r in range(w) for s in range(w) if r != s)


def run_cases(rank, world, dirs, out):
    import tessera
    import tessera.distributed as td
    ctx = tessera.Context("cpu")
    ctx.set_num_threads(1)
    dist_b, tiny, dyn = (ctx.load(p) for p in dirs)
    results = []

    def report(name, e):
        results.append((name, e))

    # Static patterns: every mode and partition, a ragged length (not a
    # multiple of the world size), a batch of 2, grouped-query heads.
    for bundle, layer, n, tag in ((tiny, 0, 301, "tiny-mix"),
                                  (dist_b, 2, 263, "mix")):
        q, k, v = inputs(bundle, layer, 2, n, 1 + layer)
        ro, rlse = reference(bundle, layer, q, k, v)
        for pname in ("contiguous", "zigzag", "balanced"):
            part = td.partition(bundle, layer, n, world, pname)
            qs, ks, vs = (shard(x, part, rank) for x in (q, k, v))
            for mode, fn in (("ring", td.ring_attention),
                             ("allgather", td.allgather_attention),
                             ("ulysses", td.ulysses_attention)):
                o, lse = fn(bundle, layer, qs, ks, vs, part)
                report(f"{tag} {mode} {pname}",
                       error(o, lse, ro, rlse, part, rank))
        # A head range (tensor parallel outside, context parallel inside):
        # heads 2..4 read kv heads 0..1 of tiny-mix (3 query heads each).
        heads = (2, 3) if tag == "tiny-mix" else (3, 4)
        g = q.shape[2] // k.shape[2]
        kv = slice(heads[0] // g, (heads[0] + heads[1] - 1) // g + 1)
        part = td.partition(bundle, layer, n, world, "zigzag")
        qh = shard(q[:, :, heads[0]:heads[0] + heads[1]], part, rank)
        kh, vh = (shard(x[:, :, kv], part, rank) for x in (k, v))
        for mode, fn in (("ring", td.ring_attention),
                         ("allgather", td.allgather_attention)):
            o, lse = fn(bundle, layer, qh, kh, vh, part, heads=heads)
            report(f"{tag} {mode} head range",
                   error(o, lse, ro, rlse, part, rank, heads))
        if heads[1] >= world:
            o, lse = td.ulysses_attention(bundle, layer, qh, kh, vh, part,
                                          heads=heads)
            report(f"{tag} ulysses head range",
                   error(o, lse, ro, rlse, part, rank, heads))
        # The module.
        m = td.ContextParallelAttention(bundle, layer, "ring")
        m.part = td.partition(bundle, layer, n, world)
        o, lse = m(*(shard(x, m.part, rank) for x in (q, k, v)))
        report(f"{tag} module", error(o, lse, ro, rlse, m.part, rank))

    # Equal shards that every rank needs: the all-gather collective.
    q, k, v = inputs(tiny, 0, 1, 300, 3)
    ro, rlse = reference(tiny, 0, q, k, v)
    part = td.contiguous(300, world)
    stats = {}
    o, lse = td.allgather_attention(tiny, 0, *(shard(x, part, rank)
                                               for x in (q, k, v)), part,
                                    stats=stats)
    e = error(o, lse, ro, rlse, part, rank)
    report("tiny-mix allgather collective",
           e if stats["shards_sent"] == world - 1 and
           stats["bytes_sent"] == stats["bytes_dense"] else float("inf"))

    # USP (xDiT): Ulysses inside pairs of ranks, a ring across them.
    if world == 4:
        uly, ring = td.usp_groups(2)
        for pname in ("contiguous", "zigzag"):
            n = 263
            q, k, v = inputs(dist_b, 2, 2, n, 7)
            ro, rlse = reference(dist_b, 2, q, k, v)
            part = td.partition(dist_b, 2, n, world, pname)
            o, lse = td.usp_attention(dist_b, 2, *(shard(x, part, rank)
                                                   for x in (q, k, v)),
                                      part, uly, ring)
            report(f"mix usp {pname}", error(o, lse, ro, rlse, part, rank))

    # Dynamic heads: Ulysses gives the single-process result bit for bit;
    # the ring refuses, naming Ulysses.
    for layer in (1, 2, 3, 4):
        info = dyn.layer_info(layer)
        if info["num_heads"] < world:
            continue
        n = 197
        q, k, v = inputs(dyn, layer, 1, n, 10 + layer)
        ro, rlse = reference(dyn, layer, q, k, v)
        part = td.partition(dyn, layer, n, world, "contiguous")
        o, lse = td.ulysses_attention(dyn, layer, *(shard(x, part, rank)
                                                    for x in (q, k, v)), part)
        exact = torch.equal(o, ro[:, td.indices(part, rank)]) and torch.equal(
            lse, rlse[:, :, td.indices(part, rank)])
        report(f"dynamic layer {layer} ulysses", 0.0 if exact else
               max(error(o, lse, ro, rlse, part, rank), 1.0))
    try:
        part = td.contiguous(64, world)
        td.ring_attention(dyn, 3, *(shard(x, part, rank)
                                    for x in inputs(dyn, 3, 1, 64, 0)), part)
        results.append(("dynamic ring refusal", "not refused"))
    except ValueError as e:
        results.append(("dynamic ring refusal", str(e)))

    # Bad input: named, not a hang or a crash.
    q, k, v = inputs(dist_b, 0, 1, 64, 0)
    part = td.contiguous(64, world)
    bad = [("gap", lambda: td.ring_attention(
                dist_b, 0, *(shard(x, part, rank) for x in (q, k, v)),
                [[(1, 16)]] + part[1:])),
           ("short q", lambda: td.allgather_attention(
                dist_b, 0, shard(q, part, rank)[:, 1:],
                *(shard(x, part, rank) for x in (k, v)), part)),
           ("strategy", lambda: td.partition(dist_b, 0, 64, world, "zig"))]
    for name, call in bad:
        try:
            call()
            results.append((f"bad {name}", "not refused"))
        except ValueError as e:
            results.append((f"bad {name}", str(e)))

    # Skipped exchanges: bytes sent against the shards the definitions
    # need (A-shape: the sink's rank and the window's neighbour; causal:
    # the ranks before).
    for layer, name in ((0, "a-shape"), (1, "causal")):
        n = 512
        q, k, v = inputs(dist_b, layer, 1, n, 30 + layer)
        ro, rlse = reference(dist_b, layer, q, k, v)
        part = td.contiguous(n, world)
        shard_bytes = 2 * (n // world) * 2 * 64 * 4  # k and v, float32
        want = needed_shards(allowed_mask(layer, n), part) * shard_bytes
        for mode, fn in (("ring", td.ring_attention),
                         ("allgather", td.allgather_attention)):
            stats = {}
            o, lse = fn(dist_b, layer, *(shard(x, part, rank)
                                         for x in (q, k, v)), part,
                        stats=stats)
            sent = torch.tensor([stats["bytes_sent"], stats["bytes_dense"]],
                                dtype=torch.int64)
            dist.all_reduce(sent)
            results.append((f"{name} {mode} bytes",
                            (int(sent[0]), want, int(sent[1]))))
            report(f"{name} {mode} skip", error(o, lse, ro, rlse, part, rank))
    out.put((rank, results))


def worker(rank, world, port, dirs, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        dist.init_process_group("gloo", rank=rank, world_size=world)
        run_cases(rank, world, dirs, out)
        dist.destroy_process_group()
    except Exception:
        out.put((rank, traceback.format_exc()))


def main():
    world, dirs = int(sys.argv[1]), sys.argv[2:5]
    mpc = mp.get_context("spawn")
    out = mpc.Queue()
    port = free_port()
    procs = [mpc.Process(target=worker, args=(r, world, port, dirs, out))
             for r in range(world)]
    for p in procs:
        p.start()
    got = {}
    try:
        for _ in range(world):
            rank, res = out.get(timeout=240)  # a hang fails, never blocks
            got[rank] = res
    except Exception:
        print("FAILED: a rank did not answer in time")
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    for rank, res in sorted(got.items()):
        if isinstance(res, str):
            print(f"FAILED on rank {rank}:\n{res}")
    if len(got) != world or any(isinstance(r, str) for r in got.values()):
        sys.exit(1)
    for i, (name, _) in enumerate(got[0]):
        vals = [got[r][i][1] for r in range(world)]
        if isinstance(vals[0], float):
            worst = max(vals)
            print(f"W={world} {name}: {'ok' if worst <= TOL else 'FAILED'} "
                  f"({worst:.1e})")
        elif isinstance(vals[0], tuple):
            sent, want, dense = vals[0]
            print(f"W={world} {name}: sent {sent} needed {want} dense "
                  f"{dense}: {'ok' if sent == want else 'FAILED'}")
        else:
            print(f"W={world} {name}: {vals[0]}")


if __name__ == "__main__":
    main()
