"""Bundle.attention_run (tessera_attention_run) from Python on the CPU: a
packed ragged batch and a paged cache give what one dense call per sequence
gives, bit for bit; bad arrays are refused by name."""
import sys

import numpy as np

import tessera

bundles = sys.argv[1]
ctx = tessera.Context("cpu")
ctx.set_num_threads(2)
b = ctx.load(bundles + "/tiny-mix")
H, HKV, D = 6, 2, 64
rng = np.random.default_rng(5)
lens = [7, 0, 70, 33]
cu = np.array([0] + list(np.cumsum(lens)), np.int32)
T = int(cu[-1])
q = rng.standard_normal((1, T, H, D), np.float32)
k = rng.standard_normal((1, T, HKV, D), np.float32)
v = rng.standard_normal((1, T, HKV, D), np.float32)
out = np.zeros_like(q)
lse = np.zeros((H, T), np.float32)
b.attention_run(0, q, k, v, out, lse=lse, num_seqs=len(lens),
                cu_seqlens_q=cu, cu_seqlens_k=cu)

same = True
for s, n in enumerate(lens):
    if n == 0:
        continue
    rows = slice(int(cu[s]), int(cu[s + 1]))
    o1, l1 = b.attention(0, q[:, rows].copy(), k[:, rows].copy(), v[:, rows].copy())
    same &= np.array_equal(o1[0], out[0, rows]) and np.array_equal(l1[0], lse[:, rows])
print("packed equals per-sequence calls:", same)

# The same keys in a paged cache of 16-row pages, shuffled.
ps = 16
pages = sum((n + ps - 1) // ps for n in lens) + 2
order = rng.permutation(pages).astype(np.int32)
kc = np.full((pages, ps, HKV, D), np.nan, np.float32)
vc = kc.copy()
table = np.full((len(lens), 8), -1, np.int32)
nxt = 0
for s, n in enumerate(lens):
    for j in range(n):
        if j % ps == 0:
            table[s, j // ps] = order[nxt]
            nxt += 1
        kc[table[s, j // ps], j % ps] = k[0, cu[s] + j]
        vc[table[s, j // ps], j % ps] = v[0, cu[s] + j]
paged = np.zeros_like(q)
b.attention_run(0, q, kc, vc, paged, num_seqs=len(lens), cu_seqlens_q=cu,
                block_table=table, seq_lens_k=np.array(lens, np.int32))
print("paged equals packed:", np.array_equal(paged, out))

bad = cu.copy()
bad[2] = 1
for name, kwargs in (("decreasing", dict(cu_seqlens_q=bad, cu_seqlens_k=cu)),
                     ("short", dict(cu_seqlens_q=cu[:3], cu_seqlens_k=cu))):
    try:
        b.attention_run(0, q, k, v, out, num_seqs=len(lens), **kwargs)
        print(name, "accepted")
    except (tessera.TesseraError, ValueError) as e:
        print(name, "->", e)
