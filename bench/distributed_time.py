"""CPU wall time of tessera.distributed with 1 and 2 gloo processes
(docs/PERFORMANCE.md, "Context parallelism").

usage: distributed_time.py BUNDLE LAYER TOKENS [REPEATS]

One process: the dense call over the whole sequence (1 thread). Two
processes: each holds half the sequence (the partition `partition` picks)
and runs ring_attention, ulysses_attention and allgather_attention with 1
thread each; the time is the slower rank's, median of REPEATS (default 3),
after a warm-up call: wall seconds, and the process's CPU seconds (which a
machine shared with other work does not inflate as much). Prints one line
per mode.
"""

import os
import socket
import statistics
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def inputs(bundle, layer, n):
    info = bundle.layer_info(layer)
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, n, info["num_heads"], info["head_dim"], generator=g),
            torch.randn(1, n, info["num_kv_heads"], info["head_dim"],
                        generator=g),
            torch.randn(1, n, info["num_kv_heads"], info["head_dim"],
                        generator=g))


def timed(fn, repeats, barrier=None):
    """Median wall and CPU seconds (this process's) of fn."""
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        if barrier:
            barrier()
        t, c = time.perf_counter(), time.process_time()
        fn()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return statistics.median(wall), statistics.median(cpu)


def worker(rank, port, args, out):
    import tessera
    import tessera.distributed as td
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    path, layer, n, repeats = args
    ctx = tessera.Context("cpu")
    ctx.set_num_threads(1)
    b = ctx.load(path)
    q, k, v = inputs(b, layer, n)
    part = td.partition(b, layer, n, 2)
    qs, ks, vs = (x[:, td.indices(part, rank)].contiguous() for x in (q, k, v))
    res = {}
    for name, fn in (("ring", td.ring_attention),
                     ("ulysses", td.ulysses_attention),
                     ("allgather", td.allgather_attention)):
        t = timed(lambda: fn(b, layer, qs, ks, vs, part), repeats,
                  dist.barrier)
        slow = torch.tensor(t)
        dist.all_reduce(slow, op=dist.ReduceOp.MAX)
        res[name] = slow.tolist()
    dist.destroy_process_group()
    if rank == 0:
        out.put(res)


def main():
    import tessera
    path, layer, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    repeats = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    torch.set_num_threads(1)
    ctx = tessera.Context("cpu")
    ctx.set_num_threads(1)
    b = ctx.load(path)
    q, k, v = inputs(b, layer, n)
    o = torch.empty_like(q).numpy()
    lse = torch.empty(1, q.shape[2], n).numpy()
    one = timed(lambda: b.attention_run(layer, q.numpy(), k.numpy(),
                                        v.numpy(), o, lse), repeats)
    print(f"1 process, 1 thread: {one[0]:.3f} s wall, {one[1]:.3f} s CPU")
    mpc = mp.get_context("spawn")
    out = mpc.Queue()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [mpc.Process(target=worker, args=(r, port, (path, layer, n,
                                                         repeats), out))
             for r in range(2)]
    for p in procs:
        p.start()
    res = out.get(timeout=1200)
    for p in procs:
        p.join()
    for name, (wall, cpu) in res.items():
        print(f"2 processes ({name}), 1 thread each: {wall:.3f} s wall "
              f"({one[0] / wall:.2f}x), slower rank {cpu:.3f} s CPU "
              f"({one[1] / cpu:.2f}x)")


if __name__ == "__main__":
    main()
