#!/usr/bin/python3
"""The CUDA index kernels' share of a dynamic layer, estimated from SASS.

  bench/sass_index_share.py [--build build] [--nvdisasm PATH] [--keep DIR]
                            [--lengths 32768,131072] [--verbose]

A MODEL, not a measurement (no GPU is used). It emits one layer with the
three dynamic families of bench/dynamic_bench.cpp (each intersected with
causal; head_dim 128, bf16, one head each), compiles the bundle with NVRTC
as the runtime does (--gpu-architecture=sm_90 -std=c++17, through ctypes),
disassembles the cubin with nvdisasm (PyPI: nvidia-cuda-nvdisasm), finds
each kernel's loops (backward branches) and counts per loop body the
instructions and the dependent-load stalls. Trip counts come from the launch
plan (DynamicArgs.h dynLaunch) and the loops of DynamicIndex.cuh at the CPU
bench's parameters; the attention kernels run the CPU bench's tile counts.
It prints a markdown table: per family and length the index kernels' time,
the attention's, and the index's share, and the dominant index kernel.

The model (all stated, none fitted):
  * a warp executes every instruction of its thread once (no divergence);
    instructions outside loops count once per thread (an upper bound: the
    three families' layout branches all count);
  * per SM: 4 schedulers issue 1 warp instruction a cycle each; a kernel's
    blocks spread evenly, c blocks resident (registers, shared memory);
    a wave of c blocks takes max(c * I, I + S) cycles, I the instructions a
    warp issues and S its exposed stalls: per loop iteration (and once for
    the straight-line code) one load latency for each first use of a
    pending load's result (predicated loads count as taken), plus a
    barrier cost per BAR.SYNC;
  * memory: max(first reads of Q/K/V / HBM bandwidth, L2-side bytes / L2
    bandwidth), the L2-side bytes per kernel as written in SPECS; the
    kernel's time is max(issue/stall time, memory time) plus a launch gap;
  * the attention: tiles x (the tile loop's instructions and stalls, and
    the nested loops a tile runs), tiles spread evenly over the SMs.
"""
import argparse
import collections
import datetime
import math
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "scripts"))
import sasslib  # noqa: E402

# The GPUs (public figures; the clock is the boost clock).
GPUS = {
    "H100 SXM": dict(sms=132, ghz=1.98, hbm=3.35e12, l2=5.5e12),
    "H200": dict(sms=132, ghz=1.98, hbm=4.8e12, l2=5.5e12),
}
# Latencies in cycles (microbenchmark-level figures for Hopper, rounded).
LAT = dict(lds=30, l1=40, l2=260, bar=24)
LAUNCH_GAP_S = 2e-6  # back-to-back launches on one stream, no CUDA graph
L1_BYTES = 192 * 1024  # a block's re-read global data that stays in L1

# The CPU bench's parameters and tile counts (tessera-dynamic-bench output,
# the lead's runs for issue 22): vertical-slash contiguous + gathered
# tiles, block top-k tiles, routing tiles.
TILES = {
    32768: dict(vs=(48963, 3059), bt=4359, rt=9434),
    131072: dict(vs=(192514, 16491), bt=17478, rt=134171),
}
PATTERN = """attn.model @sass_index_share {
  attn.layer 0 heads = 3 kv_heads = 3 head_dim = 128 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 64, vertical = 1000, slash = 6096, first_columns = 30, last_diagonals = 100>>
    attn.heads [1] = #attn.intersect<#attn.causal, #attn.block_topk<block = 64, gamma = 0.9, min_blocks = 16>>
    attn.heads [2] = #attn.intersect<#attn.causal, #attn.routing<clusters = 16, kmeans_iterations = 2>>
  }
}
"""
D, LQ, CL, ITERS, SLASH, VERT = 128, 64, 16, 2, 6096, 1000
TRACKED = re.compile(r"(LDG|STG|LDS|STS|BAR|FFMA|FADD|MUFU|CALL|HMMA)")
BAR = "BAR.SYNC.DEFER_BLOCKING"


def cdiv(a, b):
    return -(-a // b)


# Per index kernel: grid(n), launches, the level of its re-read global
# data, L2-side bytes(n), first reads of Q/K/V from HBM (bytes, n), and
# its loops: (own tracked opcode counts, occurrence, trips per thread(n)).
# Trips follow DynamicIndex.cuh: `for (i = t; i < m; i += 128)` runs
# m / 128 times, unrolled by the factor the SASS shows (16 loads a body:
# m / 128 / 16 trips of the main loop, the rest in the remainder loop).
def specs():
    nb = lambda n: n // 128  # noqa: E731  chunks of 128 keys
    tk = lambda n: n // 64  # noqa: E731  key (and query) blocks of 64
    return {
        "vertical_slash": [
            ("tessera_vs_scores_bf16_d128", nb, 1, lambda n: "l2",
             lambda n: nb(n) * (LQ * D * 2 + 128 * D * 2 + LQ * 128 * 4),
             lambda n: n * D * 2, [
                 ({"STG.E": 16}, 0, lambda n: LQ // 16),  # r0
                 ({BAR: 2, "FADD": 16, "FFMA": 512, "LDG.E.U16": 6,
                   "LDS": 32, "LDS.128": 132, "STS": 6}, 0,
                  lambda n: LQ // 16 * D // 32),  # dc
                 ({"LDG.E.U16": 4, "STS": 4}, 0,
                  lambda n: LQ // 16 * D // 32 * 4 // 4),  # 16x32 of Q
                 ({"LDG.E.U16": 4, "STS": 4}, 1,
                  lambda n: LQ // 16 * D // 32 * 32 // 4),  # 128x32 of K
             ]),
            ("tessera_vs_softmax", lambda n: LQ, 1,
             lambda n: "l1" if n * 4 <= L1_BYTES else "l2",
             lambda n: LQ * n * 4 * (2 if n * 4 <= L1_BYTES else 4),
             lambda n: 0, [
                 ({"LDG.E": 1}, 0, lambda n: nb(n) % 16),
                 ({"LDG.E": 16}, 0, lambda n: nb(n) // 16),
                 ({"FADD": 2, "LDG.E": 1, "MUFU.EX2": 1}, 0,
                  lambda n: nb(n) % 16),
                 ({"FADD": 32, "LDG.E": 16, "MUFU.EX2": 16}, 0,
                  lambda n: nb(n) // 16),
                 ({"FADD": 1, "LDG.E": 1, "MUFU.EX2": 1, "STG.E": 1}, 0,
                  lambda n: nb(n) % 4),
                 ({"FADD": 4, "LDG.E": 4, "MUFU.EX2": 4, "STG.E": 4}, 0,
                  lambda n: nb(n) // 4),
             ]),
            ("tessera_vs_sums", nb, 1, lambda n: "l2",
             lambda n: 2 * LQ * n * 4 + 2 * n * 4, lambda n: 0, [
                 ({"FADD": 8, "LDG.E": 8}, 0, lambda n: LQ // 4),
             ]),
            # Two blocks (columns, diagonals): the diagonal block's work
            # (count 6096; the equal-key scan stops half way on average;
            # groups at most ceil(6096 / 128) chunks).
            ("tessera_vs_select", lambda n: 2, 1,
             lambda n: "l1" if n * 4 <= L1_BYTES else "l2",
             lambda n: 2 * n * 4 * (2 if n * 4 <= L1_BYTES else 35),
             lambda n: 0, [
                 ({BAR: 16, "LDG.E": 3, "LDS.64": 15, "STS.64": 8}, 0,
                  lambda n: 32),  # selectTop's bits
                 ({"LDG.E": 4}, 0, lambda n: 32 * (nb(n) // 4)),
                 ({"LDG.E": 4}, 1, lambda n: nb(n) // 4),
                 ({"LDG.E": 1}, 0, lambda n: nb(n) % 4),
                 ({BAR: 17, "LDG.E": 1, "LDS.64": 17, "STS.64": 9}, 0,
                  lambda n: nb(n) // 2),  # the need-th equal key
                 ({BAR: 16, "LDG.E": 1, "LDS.64": 16, "STG.E.64": 1,
                   "STS.64": 8}, 0, lambda n: nb(n)),  # the output
                 ({BAR: 16, "LDG.E.64": 2, "LDS.64": 16, "STG.E.64": 1,
                   "STS.64": 8}, 0, lambda n: cdiv(SLASH, 128)),
                 ({BAR: 8, "LDG.E.64": 16, "STG.E.64": 8}, 0,
                  lambda n: cdiv(SLASH, 128) // 4),
             ]),
        ],
        "block_topk": [
            ("tessera_bt_pool_bf16", lambda n: 2 * tk(n), 1, lambda n: "l2",
             lambda n: 2 * n * D * 2 + 2 * tk(n) * D * 4,
             lambda n: 2 * n * D * 2, [
                 ({"CALL.REL.NOINC": 1, "FADD": 15, "FFMA": 5,
                   "LDG.E.U16": 15, "MUFU.RCP": 1, "STG.E": 1}, 0,
                  lambda n: 1),  # x < head_dim, 128 threads
                 ({"FADD": 16, "LDG.E.U16": 16}, 0, lambda n: 64 // 16),
             ]),
            # Every query block reads all pooled keys (tk x D fp32, strided
            # by lane: one row a thread) from L2.
            ("tessera_bt_scores", tk, 1, lambda n: "l2",
             lambda n: tk(n) * (tk(n) * D * 4 + D * 4 + 4 * tk(n) * 4),
             lambda n: 0, [
                 ({"FFMA": 3, "LDG.E": 6, "STG.E": 1}, 0,
                  lambda n: tk(n) // 128),
                 ({"FFMA": 4, "LDG.E": 8}, 0,
                  lambda n: tk(n) // 128 * (D // 4)),
                 ({"FADD": 2, "LDG.E": 1, "MUFU.EX2": 1}, 0,
                  lambda n: tk(n) // 128 % 16),
                 ({"FADD": 32, "LDG.E": 16, "MUFU.EX2": 16}, 0,
                  lambda n: tk(n) // 128 // 16),
                 ({"FADD": 1, "LDG.E": 1, "MUFU.EX2": 1, "STG.E": 1}, 0,
                  lambda n: tk(n) // 128 % 4),
                 ({"FADD": 4, "LDG.E": 4, "MUFU.EX2": 4, "STG.E": 4}, 0,
                  lambda n: tk(n) // 128 // 4),
             ]),
            # btCoverCount with gamma: the total, 32 bits of the threshold
            # (each a pass over the row and a block sum), the tallies.
            ("tessera_bt_take", tk, 1, lambda n: "l1",
             lambda n: tk(n) * tk(n) * 4, lambda n: 0, [
                 ({"FADD": 1, "LDG.E": 1}, 0, lambda n: tk(n) // 128 % 16),
                 ({"FADD": 16, "LDG.E": 16}, 0, lambda n: tk(n) // 128 // 16),
                 ({BAR: 9, "FADD": 22, "LDG.E": 15, "LDS": 15, "STS": 8}, 0,
                  lambda n: 32),
                 ({"FADD": 16, "LDG.E": 16}, 1,
                  lambda n: 32 * (tk(n) // 128 // 16)),
                 ({"FADD": 4, "LDG.E": 4}, 0, lambda n: tk(n) // 128 // 4),
                 ({"FADD": 1, "LDG.E": 1}, 1, lambda n: tk(n) // 128 % 4),
             ]),
            # selectTop (32 bits, a pass and a block scan each), the
            # equal-key scan (half way), the output (a block scan a chunk).
            ("tessera_bt_select", tk, 1, lambda n: "l1",
             lambda n: tk(n) * tk(n) * 4 + tk(n) * 64 * 8, lambda n: 0, [
                 ({BAR: 16, "LDG.E": 11, "LDS.64": 15, "STS.64": 8}, 0,
                  lambda n: 32),
                 ({"LDG.E": 16}, 0, lambda n: 32 * (tk(n) // 128 // 16)),
                 ({"LDG.E": 4}, 0, lambda n: 32 * (tk(n) // 128 % 16 // 4)),
                 ({"LDG.E": 16}, 1, lambda n: tk(n) // 128 // 16),
                 ({"LDG.E": 4}, 1, lambda n: tk(n) // 128 % 16 // 4),
                 ({BAR: 17, "LDG.E": 1, "LDS.64": 17, "STS.64": 9}, 0,
                  lambda n: cdiv(tk(n) // 128, 2)),
                 ({BAR: 16, "LDG.E": 4, "LDS.64": 16, "STG.E.64": 1,
                   "STS.64": 8}, 0, lambda n: tk(n) // 128),
             ]),
        ],
        "routing": [
            ("tessera_rt_seed_bf16", lambda n: CL, 1, lambda n: "l2",
             lambda n: CL * D * 6, lambda n: CL * D * 2, [
                 ({"LDG.E.U16": 1, "STG.E": 1}, 0, lambda n: 1),
             ]),
            # Keys: k-means' assignments (2) and the final one; one row a
            # thread (re-read per cluster from L1), centroids broadcast.
            ("tessera_rt_assign_keys_bf16", nb, ITERS + 1, lambda n: "l1",
             lambda n: n * D * 2 + nb(n) * CL * D * 4 + n * 4,
             lambda n: n * D * 2, [
                 ({"FFMA": 3, "LDG.E": 3, "LDG.E.U16": 3}, 0, lambda n: CL),
                 ({"FFMA": 4, "LDG.E": 4, "LDG.E.U16": 4}, 0,
                  lambda n: CL * (D // 4)),
             ]),
            # One block a cluster; each thread (a dimension) walks every
            # key's cluster id and adds the keys of its cluster.
            ("tessera_rt_update_bf16", lambda n: CL, ITERS,
             lambda n: "l1" if n * 4 <= L1_BYTES else "l2",
             lambda n: CL * n * 4 + n * D * 2, lambda n: 0, [
                 ({"CALL.REL.NOINC": 1, "FADD": 3, "FFMA": 5, "LDG.E": 3,
                   "LDG.E.U16": 3, "MUFU.RCP": 1, "STG.E": 1}, 0,
                  lambda n: 1),
                 ({"FADD": 4, "LDG.E": 4, "LDG.E.U16": 4}, 0,
                  lambda n: n // 4),
             ]),
            ("tessera_rt_assign_queries_bf16", nb, 1, lambda n: "l1",
             lambda n: n * D * 2 + nb(n) * CL * D * 4 + n * 4,
             lambda n: n * D * 2, [
                 ({"FFMA": 3, "LDG.E": 3, "LDG.E.U16": 3}, 0, lambda n: CL),
                 ({"FFMA": 4, "LDG.E": 4, "LDG.E.U16": 4}, 0,
                  lambda n: CL * (D // 4)),
             ]),
            # Two blocks (queries, keys): per chunk of 128 tokens every
            # thread ranks itself against the chunk (128 entries, 4 a
            # body), twice (counts, then places).
            ("tessera_rt_sort", lambda n: 2, 1, lambda n: "l2",
             lambda n: 2 * (2 * n * 4 + n * 8), lambda n: 0, [
                 ({BAR: 2, "LDG.E": 1, "LDG.E.64": 1, "LDS": 1,
                   "LDS.128": 1, "STG.E.64": 1, "STS": 1}, 0, nb),
                 ({"LDS.128": 1}, 0, lambda n: nb(n) * 32),
                 ({BAR: 32, "LDG.E.64": 1, "LDS.64": 32, "STG.E.64": 2,
                   "STS.64": 16}, 0, lambda n: 1),  # starts of C + 1
                 ({"LDG.E.64": 16, "STG.E.64": 16}, 0, lambda n: 0),
                 ({BAR: 3, "LDG.E": 1, "LDG.E.64": 1, "LDS": 2,
                   "LDS.128": 1, "STG.E.64": 2, "STS": 1}, 0, nb),
                 ({"LDS.128": 1}, 1, lambda n: nb(n) * 32),
             ]),
        ],
    }


ATTEND = {
    "vertical_slash": "tessera_vs_attend_bf16_d128",
    "block_topk": "tessera_bt_attend_bf16_d128",
    "routing": "tessera_rt_attend_bf16_d128",
}


def die(msg):
    print(f"sass_index_share.py: error: {msg}", file=sys.stderr)
    sys.exit(1)


def nvrtc_compile(source, arch):
    """The cubin of `source` as the runtime compiles it, NVRTC's version,
    and the registers / shared memory of each kernel (ptxas report):
    scripts/sasslib.py's."""
    try:
        return sasslib.nvrtc_compile(source, arch)
    except sasslib.Error as e:
        die(str(e))


def parse_sass(text):
    """kernel -> (instructions, loops as (first, last) index pairs)."""
    kernels, cur = collections.OrderedDict(), None
    for line in text.splitlines():
        m = re.match(r"^\.text\.(\S+):", line)
        if m:
            cur = kernels.setdefault(m.group(1), ([], {}))
            continue
        if cur is None:
            continue
        m = re.match(r"^(\.L_x_\d+):", line)
        if m:
            cur[1][m.group(1)] = len(cur[0])
            continue
        m = re.match(r"^\s*/\*[0-9a-f]{4,}\*/\s+(.*?)\s*;", line)
        if m:
            cur[0].append(m.group(1))
    out = {}
    for k, (ins, labels) in kernels.items():
        loops = set()
        for i, s in enumerate(ins):
            m = re.search(r"\bBRA(?:\.\w+)*\b[^`]*`\((\.L_x_\d+)\)", s)
            if m and labels[m.group(1)] < i:
                loops.add((labels[m.group(1)], i))
        out[k] = (ins, sorted(loops))
    return out


def opcode(s):
    return re.sub(r"^@!?U?P\w+\s+", "", s).split()[0]


def regs_of(text):
    out = set()
    for r, wide in re.findall(r"\bR(\d+)(\.64)?", text):
        out.add(int(r))
        if wide:
            out.add(int(r) + 1)
    return out


def body_cost(ins, idx, level):
    """(instructions, stall cycles) of executing instructions idx once, in
    order: a first use of a pending load's destination waits that load's
    latency (then nothing is pending); BAR.SYNC costs LAT['bar']."""
    pending, stall = {}, 0
    for i in idx:
        s = re.sub(r"^@!?U?P\w+\s+", "", ins[i])
        op = s.split()[0]
        args = s[len(op):]
        is_store = op.startswith(("STG", "STS", "ST.", "RED", "ATOM"))
        first, _, rest = args.partition(",")
        srcs = regs_of(args if is_store else rest)
        if pending and srcs & set(pending):
            stall += max(pending.values())
            pending = {}
        if op.startswith("BAR"):
            stall += LAT["bar"]
        if op.startswith(("LDG", "LDS", "LD.")):
            lat = LAT["lds"] if op.startswith("LDS") else LAT[level]
            width = 4 if ".128" in op else 2 if ".64" in op else 1
            base = min(regs_of(first) or {-1})
            for r in range(base, base + width):
                pending[r] = lat
    return len(idx), stall


class Kernel:
    def __init__(self, name, ins, loops):
        self.name, self.ins = name, ins
        self.loops = [(a, b) for a, b in loops if b > a]

    def own(self, loop):
        a, b = loop
        inner = [(c, d) for c, d in self.loops
                 if a <= c and d <= b and (c, d) != loop]
        return [i for i in range(a, b + 1)
                if not any(c <= i <= d for c, d in inner)]

    def tracked(self, loop):
        c = collections.Counter(opcode(self.ins[i]) for i in self.own(loop))
        return {o: n for o, n in c.items() if TRACKED.match(o)}

    def straight(self):
        return [i for i in range(len(self.ins))
                if not any(a <= i <= b for a, b in self.loops)]

    def find(self, sig, occurrence):
        hits = [lp for lp in self.loops if self.tracked(lp) == sig]
        if occurrence >= len(hits):
            die(f"{self.name}: no loop #{occurrence} with own opcodes {sig} "
                "in the SASS (the kernel changed: update SPECS)")
        return hits[occurrence]


def occupancy(regs, smem):
    """Resident 128-thread blocks per SM (sm_90)."""
    per_warp = cdiv(max(regs, 1) * 32, 256) * 256
    by_regs = (65536 // per_warp) // 4
    by_smem = (228 * 1024) // (smem + 1024)
    return max(1, min(by_regs, by_smem, 16, 32))


def index_kernel_time(k, spec, n, gpu, res):
    name, grid, launches, level, l2_bytes, hbm_bytes, loops = spec
    lv = level(n)
    instr, stall = body_cost(k.ins, k.straight(), lv)
    assigned = set()
    for sig, occ, trips in loops:
        lp = k.find(sig, occ)
        assigned.add(lp)
        t = trips(n)
        bi, bs = body_cost(k.ins, k.own(lp), lv)
        instr += t * bi
        stall += t * bs
    blocks = grid(n)
    c_max = occupancy(res[name]["regs"], res[name]["smem"])
    per_sm = cdiv(blocks, gpu["sms"])
    c = min(per_sm, c_max)
    waves = cdiv(per_sm, c)
    cycles = waves * max(c * instr, instr + stall)
    t_issue = waves * c * instr / (gpu["ghz"] * 1e9)
    t_comp = cycles / (gpu["ghz"] * 1e9)
    t_mem = max(hbm_bytes(n) / gpu["hbm"], l2_bytes(n) / gpu["l2"])
    t = max(t_comp, t_mem)
    bound = ("memory" if t_mem >= t_comp else
             "issue" if c * instr >= instr + stall else "latency")
    return dict(name=name, launches=launches, instr=instr, stall=stall,
                blocks=blocks, resident=c, t=launches * (t + LAUNCH_GAP_S),
                t_low=launches * (max(t_issue, t_mem) + LAUNCH_GAP_S),
                bound=bound, unassigned=[lp for lp in k.loops
                                         if lp not in assigned])


def tile_cost(k, loop, walk):
    """(instructions, stalls) of one tile of the walk's tile loop: its own
    body, the K and V loads (vectorised: 8 x 16 bytes a thread each), the
    mask's elementBits (32 iterations), the index's binary searches per
    tile (`walk` gives their trips), none of the non-finite guard's
    loops (finite V)."""
    a, b = loop
    instr, stall = body_cost(k.ins, k.own(loop), "l2")
    searches = list(walk.get("searches", []))
    kinds = collections.Counter()
    for lp in k.loops:
        if not (a <= lp[0] and lp[1] <= b) or lp == loop:
            continue
        sig = k.tracked(lp)
        if any(o.startswith("HMMA") for o in sig):
            die(f"{k.name}: a tile loop inside a tile loop")
        if "LDG.E.128" in sig:
            kind, trips = "load", 8
        elif "LDG.E.U16" in sig or sig.get("LDS", 0) >= 16 or \
                sig.get("LDS.U16", 0) >= 16:
            kind, trips = "scalar path / guard", 0
        elif set(sig) == {"LDG.E.64"}:
            kind = "search"
            trips = searches.pop(0) if searches else 0
        else:
            kind, trips = "elementBits", 32
        kinds[kind] += 1
        bi, bs = body_cost(k.ins, k.own(lp), "l1")
        instr += trips * bi
        stall += trips * bs
    if kinds["load"] != 2 or kinds["elementBits"] != 1:
        die(f"{k.name}: tile loop {loop}: expected two vector loads and one "
            f"mask loop, found {dict(kinds)} (update tile_cost)")
    return instr, stall


def attention_time(k, family, n, gpu, res):
    tiles = TILES[n]
    hmma = [lp for lp in k.loops
            if any(o.startswith("HMMA") for o in k.tracked(lp))]
    if not hmma:
        die(f"{k.name}: no tile loop (HMMA) in the SASS")
    if family == "vertical_slash":
        # Walk 1a (contiguous, the diagonal groups: binary searches of the
        # kept diagonals and columns a tile) and 1b (gathered columns).
        srch = [math.ceil(math.log2(SLASH + 1)),
                math.ceil(math.log2(VERT + 1))]
        work = [(hmma[0], tiles["vs"][0], dict(searches=srch)),
                (hmma[1], tiles["vs"][1], {})]
    else:
        work = [(hmma[0], tiles[{"block_topk": "bt",
                                 "routing": "rt"}[family]], {})]
    blocks = cdiv(n, 64) + (CL if family == "routing" else 0)
    instr_blk, stall_blk = body_cost(k.ins, k.straight(), "l2")
    c = occupancy(res[k.name]["regs"], res[k.name]["smem"])
    cycles = cdiv(blocks, gpu["sms"]) / c * max(c * instr_blk,
                                                  instr_blk + stall_blk)
    issue = cdiv(blocks, gpu["sms"]) * instr_blk
    ntiles = 0
    for loop, count, walk in work:
        ti, ts = tile_cost(k, loop, walk)
        per_sm = count / gpu["sms"]
        cycles += per_sm / c * max(c * ti, ti + ts)
        issue += per_sm * ti
        ntiles += count
    t_comp = cycles / (gpu["ghz"] * 1e9)
    l2 = ntiles * 64 * D * 2 * 2
    t_mem = max(4 * n * D * 2 / gpu["hbm"], l2 / gpu["l2"])
    return dict(t=max(t_comp, t_mem) + LAUNCH_GAP_S,
                t_low=max(issue / (gpu["ghz"] * 1e9), t_mem) + LAUNCH_GAP_S,
                tiles=ntiles, bound="memory" if t_mem > t_comp else "issue")


def find_nvdisasm(given):
    try:
        return sasslib.find_nvdisasm(os.path.join(ROOT, "build"),
                                     given or None)
    except sasslib.Error as e:
        die(str(e))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--nvdisasm", default="")
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--keep", default="",
                    help="write the bundle, cubin and SASS here")
    ap.add_argument("--lengths", default="32768,131072")
    ap.add_argument("--verbose", action="store_true",
                    help="also print each kernel's estimate")
    args = ap.parse_args()
    try:
        lengths = [int(x) for x in args.lengths.split(",")]
    except ValueError:
        die(f"--lengths '{args.lengths}': give comma-separated integers")
    for n in lengths:
        if n not in TILES:
            die(f"--lengths: no CPU bench tile counts for {n} "
                f"(known: {sorted(TILES)})")
    translate = os.path.join(args.build, "bin", "attn-translate")
    if not os.access(translate, os.X_OK):
        die(f"{translate} not found: build attn-translate first")
    nvdisasm = find_nvdisasm(args.nvdisasm)
    work = args.keep or tempfile.mkdtemp(prefix="tessera-sass-")
    os.makedirs(work, exist_ok=True)
    with open(os.path.join(work, "pattern.mlir"), "w") as f:
        f.write(PATTERN)
    r = subprocess.run([translate, os.path.join(work, "pattern.mlir"), "-o",
                        os.path.join(work, "bundle")], capture_output=True,
                       text=True)
    if r.returncode:
        die(f"attn-translate failed: {r.stderr.strip()}")
    with open(os.path.join(work, "bundle", "bundle.cu")) as f:
        source = f.read()
    cubin, nvrtc_version, res = nvrtc_compile(source, args.arch)
    with open(os.path.join(work, "bundle.cubin"), "wb") as f:
        f.write(cubin)
    sass = subprocess.run([nvdisasm, "-c", os.path.join(work,
                                                        "bundle.cubin")],
                          capture_output=True, text=True)
    if sass.returncode:
        die(f"nvdisasm failed: {sass.stderr.strip()}")
    if args.keep:
        with open(os.path.join(work, "bundle.sass"), "w") as f:
            f.write(sass.stdout)
    ver = subprocess.run([nvdisasm, "--version"], capture_output=True,
                         text=True).stdout
    m = re.search(r"release ([\d.]+), V([\d.]+)", ver)
    nvdisasm_version = m.group(2) if m else "unknown"
    kernels = {name: Kernel(name, ins, loops)
               for name, (ins, loops) in parse_sass(sass.stdout).items()}
    for fam in ATTEND:
        for spec in specs()[fam]:
            if spec[0] not in kernels:
                die(f"no kernel {spec[0]} in the cubin")

    print(f"Model of the CUDA dynamic layer (one head, head_dim {D}, bf16, "
          f"causal), {args.arch}, NVRTC {nvrtc_version}, nvdisasm "
          f"{nvdisasm_version}, {datetime.date.today().isoformat()}. "
          "Estimates from SASS counts, not measurements.\n")
    gpu_names = list(GPUS)
    g0 = GPUS[gpu_names[0]]
    print(f"| length | family | index ({gpu_names[0]}) | attention "
          f"({gpu_names[0]}) | index share ({gpu_names[0]}; issue-only) | "
          f"index share ({gpu_names[1]}) | dominant index kernel |")
    print("|---|---|---|---|---|---|---|")
    details = []
    for n in lengths:
        for fam in ATTEND:
            rows = {}
            for gname in gpu_names:
                gpu = GPUS[gname]
                idx = [index_kernel_time(kernels[s[0]], s, n, gpu, res)
                       for s in specs()[fam]]
                att = attention_time(kernels[ATTEND[fam]], fam, n, gpu, res)
                rows[gname] = (idx, att)
            idx, att = rows[gpu_names[0]]
            ti = sum(x["t"] for x in idx)
            tl = sum(x["t_low"] for x in idx)
            share = ti / (ti + att["t"])
            low = tl / (tl + att["t_low"])
            idx2, att2 = rows[gpu_names[1]]
            ti2 = sum(x["t"] for x in idx2)
            share2 = ti2 / (ti2 + att2["t"])
            top = max(idx, key=lambda x: x["t"])
            print(f"| {n // 1024}K | {fam} | {ti * 1e6:.0f} us | "
                  f"{att['t'] * 1e6:.0f} us ({att['tiles']} tiles) | "
                  f"{100 * share:.0f}% ({100 * low:.0f}%) | "
                  f"{100 * share2:.0f}% | {top['name']}: "
                  f"{top['t'] * 1e6:.0f} us, {top['bound']}-bound |")
            for x in idx:
                details.append(
                    f"{n // 1024}K {x['name']}: {x['launches']} launch(es), "
                    f"{x['blocks']} blocks ({x['resident']} resident/SM), "
                    f"{x['instr']:.0f} instr + {x['stall']:.0f} stall "
                    f"cycles a warp, {x['t'] * 1e6:.1f} us "
                    f"({x['bound']}), issue-only {x['t_low'] * 1e6:.1f} us")
                if x["unassigned"] and n == lengths[0]:
                    details.append(
                        "    loops given no trips (other paths: tau, "
                        "remainders of 0, empty rows): " +
                        ", ".join(f"{a}-{b}" for a, b in x["unassigned"]))
            details.append(f"{n // 1024}K {ATTEND[fam]}: {att['tiles']} "
                           f"tiles, {att['t'] * 1e6:.1f} us ({att['bound']}),"
                           f" issue-only {att['t_low'] * 1e6:.1f} us")
    print(f"\nAssumptions: {gpu_names[0]} {g0['sms']} SMs at {g0['ghz']} "
          f"GHz, HBM {g0['hbm'] / 1e12:.2f} TB/s, L2 {g0['l2'] / 1e12:.1f} "
          f"TB/s; {gpu_names[1]} HBM {GPUS[gpu_names[1]]['hbm'] / 1e12:.1f}"
          f" TB/s; latencies (cycles) shared {LAT['lds']}, L1 {LAT['l1']}, "
          f"L2 {LAT['l2']}, barrier {LAT['bar']}; launch gap "
          f"{LAUNCH_GAP_S * 1e6:.0f} us a kernel. Issue-only: without the "
          "stalls (the lower bound).")
    if args.verbose:
        print()
        for d in details:
            print(d)


if __name__ == "__main__":
    main()
