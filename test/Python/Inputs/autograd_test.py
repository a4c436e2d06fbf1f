"""tessera.torch's autograd (docs/backward.md) on the CPU, against a float64
reference written here from docs/patterns.md's definitions of tiny-mix's
layer 0 (A-shape, multi-diagonal, grid, causal strided shards, shifted
groups; 6 heads over 2 kv heads, head_dim 64).

    autograd_test.py TINY_MIX_BUNDLE DYNAMIC_BUNDLE

The loss reads o and lse, so both gradients reach the backward. Tolerances:
float32 1e-5 relative to the largest gradient (the CPU computes in float32:
P is recomputed from a float32 LSE; float64 gradcheck does not apply);
bfloat16 2e-2 (inputs, o and the gradients rounded to 2^-8).
"""

import os
import sys

import torch
import tessera.torch as tt
from torch.library import opcheck

H, HKV, D = 6, 2, 64
failures = 0


def routing_gradients(dynamic):
    """(ok, detail): layer 0's routing heads' dq and their kv head's dk, dv
    from tessera.torch against float64 autograd over the reference's
    clusters."""
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import dynamic_reference as ref
    g = torch.Generator().manual_seed(5)
    q, k, v, w = (torch.randn(1, 128, h, 64, generator=g)
                  for h in (6, 3, 3, 6))
    cents = torch.randn(6, 3, 64, generator=g)
    qd, kd, vd = (x.clone().requires_grad_(True) for x in (q, k, v))
    o, _ = tt.attention(qd, kd, vd, dynamic, 0, centroids=cents)
    (o * w).sum().backward()
    q64, k64, v64 = (x[0].double().requires_grad_(True) for x in (q, k, v))
    causal = torch.ones(128, 128, dtype=torch.bool).tril()
    loss = 0
    for h, clusters, iterations, extra in ((2, 3, 0, causal), (3, 4, 2, None)):
        qc, kc = ref.routing_index(
            q64[:, h].detach().numpy(), k64[:, 1].detach().numpy(), clusters,
            iterations, cents[h].double().numpy() if iterations == 0 else None)
        mask = torch.from_numpy(ref.routing_mask(qc, kc))
        if extra is not None:
            mask &= extra
        logits = (q64[:, h] @ k64[:, 1].T / 8.0).masked_fill(~mask, -torch.inf)
        p = torch.softmax(logits, 1).nan_to_num(0.0)  # rows without keys
        loss = loss + ((p @ v64[:, 1]) * w[0, :, h].double()).sum()
    loss.backward()
    worst = 0.0
    for got, want in ((qd.grad[0, :, 2:4], q64.grad[:, 2:4]),
                      (kd.grad[0, :, 1], k64.grad[:, 1]),
                      (vd.grad[0, :, 1], v64.grad[:, 1])):
        worst = max(worst, float((got.double() - want).abs().max()
                                 / want.abs().max()))
    return worst < 1e-4, f"worst relative error {worst:.1e}"


def check(name, ok, detail=""):
    global failures
    print(f"{name}: {'ok' if ok else 'FAILED ' + detail}")
    failures += 0 if ok else 1


def allowed(h, p, k):
    """docs/patterns.md at query position p (bottom-right) and key k."""
    d = k - p
    if h == 0:  # a_shape<sink = 2, before = 4>
        return (d <= 0) & ((k < 2) | (d >= -4))
    if h == 1:  # multi_diagonal<stride = 8, width = 1>
        m = torch.remainder(d, 8)
        return torch.minimum(m, 8 - m) <= 1
    if h == 2:  # grid<stride = 8, vertical_width = 1, slash_width = 1>
        return (torch.remainder(k, 8) < 1) | (torch.remainder(-d, 8) < 1)
    if h in (3, 4):  # causal and (window<before = 2> or strided shards 2 x 4)
        return (d <= 0) & ((d >= -2) |
                           (torch.remainder(torch.div(k, 4, rounding_mode="floor"), 2) == h % 2))
    # shifted_groups<size = 8, shift = 4> (head 5 >= H / 2 is shifted)
    return torch.div(p - 4, 8, rounding_mode="floor") == torch.div(k - 4, 8, rounding_mode="floor")


def reference(q, k, v, nq, nk):
    """float64 o [B, Nq, H, D] and lse [B, H, Nq] (rows without keys: 0, -inf)."""
    q, k, v = (x.double().transpose(1, 2) for x in (q, k, v))  # [B, H, N, D]
    k = k.repeat_interleave(H // HKV, dim=1)
    v = v.repeat_interleave(H // HKV, dim=1)
    p = torch.arange(nq).view(-1, 1) + nk - nq
    kk = torch.arange(nk).view(1, -1)
    mask = torch.stack([allowed(h, p, kk) for h in range(H)])  # [H, Nq, Nk]
    empty = ~mask.any(-1, keepdim=True)
    s = (q @ k.transpose(-1, -2)) / D ** 0.5
    s = s.masked_fill(~mask, float("-inf")).masked_fill(empty, 0.0)
    lse = torch.logsumexp(s, -1)
    pr = torch.softmax(s, -1) * mask
    o = (pr @ v).transpose(1, 2)
    lse = lse.masked_fill(empty.squeeze(-1), float("-inf"))
    return o, lse


def loss_of(o, lse, wo, wl):
    finite = torch.isfinite(lse)
    return (o.double() * wo).sum() + (torch.where(finite, lse.double(), 0.0) * wl).sum()


def grads(fn, q, k, v, wo, wl):
    q, k, v = (x.detach().clone().requires_grad_(True) for x in (q, k, v))
    o, lse = fn(q, k, v)
    loss_of(o, lse, wo, wl).backward()
    return q.grad, k.grad, v.grad


def rel(a, b):
    return ((a.double() - b.double()).abs().max() / b.double().abs().max()).item()


def main():
    bundle, dynamic = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    ours = lambda q, k, v: tt.attention(q, k, v, bundle, 0)
    for nq, nk in ((70, 90), (90, 70), (64, 128)):
        for dtype, tol in ((torch.float32, 1e-5), (torch.bfloat16, 2e-2)):
            q = torch.randn(2, nq, H, D).to(dtype)
            k = torch.randn(2, nk, HKV, D).to(dtype)
            v = torch.randn(2, nk, HKV, D).to(dtype)
            wo = torch.randn(2, nq, H, D, dtype=torch.float64)
            wl = torch.randn(2, H, nq, dtype=torch.float64)
            got = grads(ours, q, k, v, wo, wl)
            want = grads(lambda a, b, c: reference(a, b, c, nq, nk), q, k, v, wo, wl)
            errs = [rel(g, w) for g, w in zip(got, want)]
            check(f"{nq}x{nk} {dtype}: dq dk dv against float64",
                  max(errs) <= tol and all(g.dtype == dtype for g in got),
                  f"errors {errs}")

    # SDPA's [B, H, N, D] tensors transposed, as transformers passes them.
    q = torch.randn(1, H, 50, D).transpose(1, 2)
    k = torch.randn(1, HKV, 60, D).transpose(1, 2)
    v = torch.randn(1, HKV, 60, D).transpose(1, 2)
    wo = torch.randn(1, 50, H, D, dtype=torch.float64)
    wl = torch.zeros(1, H, 50, dtype=torch.float64)
    got = grads(ours, q, k, v, wo, wl)
    want = grads(lambda a, b, c: reference(a, b, c, 50, 60), q, k, v, wo, wl)
    check("transposed inputs", max(rel(g, w) for g, w in zip(got, want)) <= 1e-5)

    # torch.compile of forward and backward, one graph.
    q = torch.randn(1, 40, H, D)
    k = torch.randn(1, 40, HKV, D)
    v = torch.randn(1, 40, HKV, D)

    def step(q, k, v):
        o, lse = tt.attention(q, k, v, bundle, 0)
        return (o * o).sum()

    compiled = torch.compile(step, fullgraph=True)
    qa, ka, va = (x.clone().requires_grad_(True) for x in (q, k, v))
    qb, kb, vb = (x.clone().requires_grad_(True) for x in (q, k, v))
    step(qa, ka, va).backward()
    compiled(qb, kb, vb).backward()
    check("torch.compile(fullgraph) forward + backward matches eager",
          all(torch.allclose(a.grad, b.grad, rtol=1e-6, atol=1e-6)
              for a, b in ((qa, qb), (ka, kb), (va, vb))))

    # The custom ops' registrations, autograd included.
    args = (q.clone().requires_grad_(True), k.clone().requires_grad_(True),
            v.clone().requires_grad_(True), bundle, 0, 0.0, None)
    try:
        opcheck(torch.ops.tessera.attention.default, args)
        check("opcheck with requires_grad", True)
    except Exception as e:  # noqa: BLE001 - report what opcheck says
        check("opcheck with requires_grad", False, str(e)[:400])

    # Routing heads (layer 0: head 2 causal within the engine's centroids'
    # clusters, head 3 within k-means clusters of the keys; both read kv
    # head 1): gradients against float64 autograd over the clusters of
    # dynamic_reference.py (the selection carries no gradient).
    try:
        check("routing heads backward against float64",
              *routing_gradients(dynamic))
    except Exception as e:  # noqa: BLE001
        check("routing heads backward against float64", False, str(e)[:300])

    # Block top-k heads (layer 2): gradients through the index the forward
    # built, for every input (BackwardTest checks their values against
    # differences of the forward).
    qd = torch.randn(1, 160, 4, 64, requires_grad=True)
    kd = torch.randn(1, 160, 2, 64, requires_grad=True)
    vd = torch.randn(1, 160, 2, 64, requires_grad=True)
    try:
        o, _ = tt.attention(qd, kd, vd, dynamic, 2)
        (o * torch.randn_like(o)).sum().backward()
        ok = all(t.grad is not None and bool(torch.isfinite(t.grad).all())
                 and float(t.grad.abs().max()) > 0 for t in (qd, kd, vd))
        check("block top-k heads backward", ok, "missing or zero gradients")
    except Exception as e:  # noqa: BLE001
        check("block top-k heads backward", False, str(e)[:300])

    print(f"{failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
