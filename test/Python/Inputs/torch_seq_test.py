"""tessera.torch.attention with tessera_attention_desc's options (CPU): a
packed ragged batch, a paged cache of shuffled pages, and a head range give
what one dense call per sequence (or of the whole layer) gives, bit for bit;
positions give what the float64 reference of tiny-mix's heads at those
positions gives; opcheck on the op; bad options refused by name; the
backward of packed calls against float64, of length calls against
per-sequence calls and of a head range against the layer's, a paged call's
backward refused by name."""
import math
import sys

import torch
from torch.library import opcheck

import tessera.torch as tt

bundle = sys.argv[1]
H, HKV, D = 6, 2, 64
torch.manual_seed(3)
failures = 0


def check(name, ok, detail=""):
    global failures
    print(f"{name}: {'ok' if ok else 'FAIL ' + detail}")
    failures += 0 if ok else 1


lens = [7, 0, 70, 33]
cu = torch.tensor([0] + [sum(lens[:i + 1]) for i in range(len(lens))],
                  dtype=torch.int32)
T = int(cu[-1])
q = torch.randn(1, T, H, D)
k = torch.randn(1, T, HKV, D)
v = torch.randn(1, T, HKV, D)
o, lse = tt.attention(q, k, v, bundle, 0, num_seqs=len(lens),
                      cu_seqlens_q=cu, cu_seqlens_k=cu)
same = o.shape == q.shape and lse.shape == (H, T)
for s, n in enumerate(lens):
    if n == 0:
        continue
    r = slice(int(cu[s]), int(cu[s + 1]))
    o1, l1 = tt.attention(q[:, r], k[:, r], v[:, r], bundle, 0)
    same &= torch.equal(o1[0], o[0, r]) and torch.equal(l1[0], lse[:, r])
check("packed equals per-sequence calls", same)

# The keys in a paged cache of 16-row pages, shuffled; unused rows NaN.
ps = 16
pages = sum((n + ps - 1) // ps for n in lens) + 2
order = torch.randperm(pages)
kc = torch.full((pages, ps, HKV, D), float("nan"))
vc = kc.clone()
table = torch.full((len(lens), 8), -1, dtype=torch.int32)
nxt = 0
for s, n in enumerate(lens):
    for j in range(n):
        if j % ps == 0:
            table[s, j // ps] = int(order[nxt])
            nxt += 1
        kc[table[s, j // ps], j % ps] = k[0, int(cu[s]) + j]
        vc[table[s, j // ps], j % ps] = v[0, int(cu[s]) + j]
op, lp = tt.attention(q, kc, vc, bundle, 0, num_seqs=len(lens),
                      cu_seqlens_q=cu, block_table=table,
                      seq_lens_k=torch.tensor(lens, dtype=torch.int32))
check("paged equals packed", torch.equal(op, o) and torch.equal(lp, lse))

# A head range of a dense call: those heads of the whole layer's call.
qd, kd, vd = torch.randn(2, 50, H, D), torch.randn(2, 80, HKV, D), \
    torch.randn(2, 80, HKV, D)
ow, lw = tt.attention(qd, kd, vd, bundle, 0)
orng, lrng = tt.attention(qd[:, :, 2:5], kd[:, :, 0:2], vd[:, :, 0:2], bundle,
                          0, head_start=2, head_count=3)
check("head range equals the layer's heads",
      torch.equal(orng, ow[:, :, 2:5]) and torch.equal(lrng, lw[:, 2:5]))


# Positions: queries at 100.., keys at 37.. against a float64 reference of
# the heads' definitions (docs/patterns.md) at those positions.
def allowed(h, p, kk):
    d = kk - p
    if h == 0:  # a_shape<sink = 2, before = 4>
        return d <= 0 and (kk < 2 or d >= -4)
    if h == 1:  # multi_diagonal<stride = 8, width = 1>
        m = d % 8
        return min(m, 8 - m) <= 1
    if h == 2:  # grid<stride = 8, vertical_width = 1, slash_width = 1>
        return kk % 8 < 1 or (-d) % 8 < 1
    if h in (3, 4):  # causal and (window<before = 2> or strided shards)
        return d <= 0 and (d >= -2 or (kk // 4) % 2 == h % 2)
    return (p - 4) // 8 == (kk - 4) // 8  # shifted_groups<size = 8, shift = 4>


nq, nk, qs, ks = 30, 90, 100, 37
qp, kp, vp = torch.randn(1, nq, H, D), torch.randn(1, nk, HKV, D), \
    torch.randn(1, nk, HKV, D)
opos, lpos = tt.attention(qp, kp, vp, bundle, 0, q_start=torch.tensor([qs]),
                          k_start=torch.tensor([ks]))
worst = 0.0
for h in range(H):
    for i in range(nq):
        keys = [j for j in range(nk) if allowed(h, qs + i, ks + j)]
        if not keys:
            worst = max(worst, float(opos[0, i, h].abs().max()))
            continue
        sc = torch.tensor([float((qp[0, i, h].double() @ kp[0, j, h // 3].double()))
                           / math.sqrt(D) for j in keys], dtype=torch.float64)
        p = torch.softmax(sc, 0)
        ref = (p[:, None] * vp[0, keys, h // 3].double()).sum(0)
        worst = max(worst, float((opos[0, i, h].double() - ref).abs().max()))
check("positions against float64", worst < 1e-5, f"error {worst}")

try:
    opcheck(torch.ops.tessera.attention_seq.default,
            (q, k, v, bundle, 0, 0.0, len(lens), cu, cu, None, None, None,
             None, 0, 0))
    check("opcheck", True)
except Exception as e:  # noqa: BLE001 - report what opcheck says
    check("opcheck", False, str(e)[:400])

bad = cu.clone()
bad[2] = 1
try:
    tt.attention(q, k, v, bundle, 0, num_seqs=len(lens), cu_seqlens_q=bad,
                 cu_seqlens_k=cu)
    check("bad cu_seqlens_q refused", False, "no error")
except Exception as e:  # noqa: BLE001
    check("bad cu_seqlens_q refused", "cu_seqlens_q" in str(e), str(e)[:200])


# Packed backward (autograd) against float64: each sequence's rows see its
# own keys at positions 0.. (nq = nk: no shift), a loss reading o and lse.
def ref_packed(qr, kr, vr):
    o_ref = torch.zeros(T, H, D, dtype=torch.float64)
    l_ref = torch.full((H, T), float("-inf"), dtype=torch.float64)
    outs, lses = [], []
    for s_, n in enumerate(lens):
        a = int(cu[s_])
        for h in range(H):
            for i in range(n):
                keys = [j for j in range(n) if allowed(h, i, j)]
                sc = torch.stack([(qr[0, a + i, h] * kr[0, a + j, h // 3]).sum()
                                  for j in keys]) / math.sqrt(D)
                outs.append(((a + i, h), (torch.softmax(sc, 0)[:, None] *
                                          vr[0, [a + j for j in keys], h // 3]).sum(0)))
                lses.append(((h, a + i), torch.logsumexp(sc, 0)))
    return outs, lses


wo = torch.randn(1, T, H, D)
wl = torch.randn(H, T)
qg, kg, vg = (x.clone().requires_grad_(True) for x in (q, k, v))
o2, l2 = tt.attention(qg, kg, vg, bundle, 0, num_seqs=len(lens),
                      cu_seqlens_q=cu, cu_seqlens_k=cu)
fin = torch.isfinite(l2)
((o2 * wo).sum() + (torch.where(fin, l2, 0.0) * wl).sum()).backward()
qd64, kd64, vd64 = (x.double().requires_grad_(True) for x in (q, k, v))
outs, lses = ref_packed(qd64, kd64, vd64)
loss = sum((val * wo[0, r, h].double()).sum() for (r, h), val in outs) + \
    sum(val * float(wl[h, r]) for (h, r), val in lses)
loss.backward()
worst = max(float((a - b.grad).abs().max() / b.grad.abs().max())
            for a, b in ((qg.grad, qd64), (kg.grad, kd64), (vg.grad, vd64)))
check("packed backward against float64", worst < 1e-4, f"error {worst}")

# Length calls (keys per sequence over a dense cache, NaN past them): each
# batch entry's gradients are those of its dense call on its own keys, and
# the keys past a length get zero gradients.
ql = torch.randn(2, 20, H, D)
kl, vl = torch.randn(2, 50, HKV, D), torch.randn(2, 50, HKV, D)
lk = [30, 45]
for b_, n in enumerate(lk):
    kl[b_, n:] = float("nan")
    vl[b_, n:] = float("nan")
qg, kg, vg = (x.clone().requires_grad_(True) for x in (ql, kl, vl))
o3, _ = tt.attention(qg, kg, vg, bundle, 0,
                     seq_lens_k=torch.tensor(lk, dtype=torch.int32))
w3 = torch.randn_like(o3)
(o3 * w3).sum().backward()
same = True
for b_, n in enumerate(lk):
    qb, kb, vb = (x.detach().clone().requires_grad_(True)
                  for x in (ql[b_:b_ + 1], kl[b_:b_ + 1, :n], vl[b_:b_ + 1, :n]))
    ob, _ = tt.attention(qb, kb, vb, bundle, 0)
    (ob * w3[b_:b_ + 1]).sum().backward()
    same &= torch.equal(qg.grad[b_], qb.grad[0]) and \
        torch.equal(kg.grad[b_, :n], kb.grad[0]) and \
        torch.equal(vg.grad[b_, :n], vb.grad[0]) and \
        bool((kg.grad[b_, n:] == 0).all() and (vg.grad[b_, n:] == 0).all())
check("length backward equals per-sequence calls", same)

# A head-range call's gradients: those of the whole layer's call for a loss
# that reads the range's heads only (heads 3-5 are kv head 1's group).
w5 = torch.randn(2, 50, 3, D)
qg, kg, vg = (x.clone().requires_grad_(True) for x in (qd, kd, vd))
ow2, _ = tt.attention(qg, kg, vg, bundle, 0)
(ow2[:, :, 3:6] * w5).sum().backward()
qr, kr, vr = (x.detach().clone().requires_grad_(True)
              for x in (qd[:, :, 3:6], kd[:, :, 1:2], vd[:, :, 1:2]))
orr, _ = tt.attention(qr, kr, vr, bundle, 0, head_start=3, head_count=3)
(orr * w5).sum().backward()
check("head range backward equals the layer's heads",
      torch.equal(qr.grad, qg.grad[:, :, 3:6]) and
      torch.equal(kr.grad, kg.grad[:, :, 1:2]) and
      torch.equal(vr.grad, vg.grad[:, :, 1:2]))

try:
    kcg = kc.clone().requires_grad_(True)
    o4, _ = tt.attention(q, kcg, vc, bundle, 0, num_seqs=len(lens),
                         cu_seqlens_q=cu, block_table=table,
                         seq_lens_k=torch.tensor(lens, dtype=torch.int32))
    o4.sum().backward()
    check("paged backward refused", False, "no error")
except Exception as e:  # noqa: BLE001 - the library's error, by name
    check("paged backward refused", "block_table" in str(e), str(e)[:200])
print(f"{failures} failures")
sys.exit(1 if failures else 0)
