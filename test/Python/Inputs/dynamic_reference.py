"""Float64 numpy references of the dynamic patterns' index builders, written
from their definitions (docs/patterns.md, "Dynamic patterns"; the papers:
MInference, FlexPrefill, the Routing Transformer). They are the oracle the
CPU and CUDA builders are checked against: same inputs, the same selected
sets, ties broken as documented.

Shapes: one head, q [Nq, D], k [Nk, D] (float64); queries bottom-right
aligned: row q sits at position p = q + Nk - Nq. `scale` defaults to
1/sqrt(D).
"""
import numpy as np


def _scale(d, scale):
    return 1.0 / np.sqrt(d) if scale is None else scale


def _top(scores, count, tie_key):
    """Indices of the `count` largest scores; ties by `tie_key` (smaller
    first)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], tie_key(i)))
    return order[:max(count, 0)]


#===----------------------------------------------------------------------===#
# vertical_slash (MInference)
#===----------------------------------------------------------------------===#

def vertical_slash_scores(q, k, last_q, scale=None):
    """Column and diagonal sums of the causal softmax of the last `last_q`
    queries: (columns [Nk], diagonals {d: sum} for d in [-(Nk-1), 0])."""
    nq, nk = q.shape[0], k.shape[0]
    s = _scale(q.shape[1], scale)
    cols = np.zeros(nk)
    diags = {d: 0.0 for d in range(-(nk - 1), 1)}
    for row in range(max(nq - last_q, 0), nq):
        p = row + nk - nq
        if p < 0:
            continue  # no key at or before this query
        keys = min(p, nk - 1) + 1
        logits = (q[row] @ k[:keys].T) * s
        w = np.exp(logits - logits.max())
        w /= w.sum()
        cols[:keys] += w
        for key in range(keys):
            diags[key - p] += w[key]
    return cols, diags


def select_vertical_slash(cols, diags, vertical, slash, first_columns,
                          last_diagonals):
    """The kept columns and diagonals (sorted ascending): the forced ones
    (first columns, diagonals nearest the query) count towards the budgets;
    the rest by score, ties to the smaller column and to the diagonal nearer
    the query."""
    nk = len(cols)
    forced_c = list(range(min(first_columns, nk)))
    rest_c = [c for c in range(nk) if c >= first_columns]
    chosen_c = _top([cols[c] for c in rest_c], vertical - len(forced_c),
                    lambda i: rest_c[i])
    columns = sorted(forced_c + [rest_c[i] for i in chosen_c])
    valid = sorted(diags)                       # -(Nk-1) .. 0
    forced_d = [d for d in valid if d > -last_diagonals]
    rest_d = [d for d in valid if d <= -last_diagonals]
    chosen_d = _top([diags[d] for d in rest_d], slash - len(forced_d),
                    lambda i: -rest_d[i])
    diagonals = sorted(forced_d + [rest_d[i] for i in chosen_d])
    return columns, diagonals


def vertical_slash_index(q, k, last_q, vertical, slash, first_columns=0,
                         last_diagonals=0, scale=None):
    cols, diags = vertical_slash_scores(q, k, last_q, scale)
    return select_vertical_slash(cols, diags, vertical, slash, first_columns,
                                 last_diagonals)


def vertical_slash_mask(nq, nk, columns, diagonals):
    """[Nq, Nk] bool: k is a kept column or k - p a kept diagonal."""
    p = np.arange(nq)[:, None] + nk - nq
    key = np.arange(nk)[None, :]
    return np.isin(key, columns) | np.isin(key - p, diagonals)


#===----------------------------------------------------------------------===#
# block_topk (FlexPrefill, SpargeAttn)
#===----------------------------------------------------------------------===#

def pool(x, block):
    """Mean over `block`-row blocks (the last one over its rows)."""
    n = x.shape[0]
    return np.stack([x[i:i + block].mean(0) for i in range(0, n, block)])


def query_blocks(nq, nk, block):
    """Block top-k's query blocks are blocks of positions p = q + Nk - Nq
    (like every pattern that looks at a query): (first, rows) where rows[i]
    is the range of rows with floor(p / block) == first + i."""
    pos = np.arange(nq) + nk - nq
    ids = pos // block  # floor division, also for negative positions
    first = int(ids[0])
    return first, [range(int(np.searchsorted(ids, j)),
                         int(np.searchsorted(ids, j, side="right")))
                   for j in range(first, int(ids[-1]) + 1)]


def block_topk_mask(nq, nk, block, lists):
    """The pairs a block top-k index allows: row q, key k when floor(k /
    block) is kept by the query block of q's position."""
    first, rows = query_blocks(nq, nk, block)
    m = np.zeros((nq, nk), bool)
    for i, r in enumerate(rows):
        for b in lists[i]:
            m[r.start:r.stop, b * block:(b + 1) * block] = True
    return m


def select_coverage(probs, gamma, min_blocks, max_blocks):
    """The fewest largest entries whose mass reaches gamma (ties: smaller
    index), clamped to [min_blocks, max_blocks] (0: no upper bound) and to
    the number of entries; sorted ascending."""
    order = _top(list(probs), len(probs), lambda i: i)
    total, take = 0.0, 0
    for i in order:
        total += probs[i]
        take += 1
        if total >= gamma - 1e-12:
            break
    take = max(take, min_blocks)
    if max_blocks > 0:
        take = min(take, max_blocks)
    return sorted(order[:min(take, len(order))])


def block_topk_index(q, k, block, gamma=0.0, top_k=0, min_blocks=0,
                     max_blocks=0, scale=None):
    """Per query block (of positions, from query_blocks' first on), the kept
    key blocks (sorted), query-aware mode. Q is pooled over the rows of each
    query block present, K over the keys of each key block present."""
    s = _scale(q.shape[1], scale)
    _, rows = query_blocks(q.shape[0], k.shape[0], block)
    qb = np.stack([q[r.start:r.stop].mean(0) for r in rows])
    kb = pool(k, block)
    out = []
    for i in range(qb.shape[0]):
        logits = (kb @ qb[i]) * s
        w = np.exp(logits - logits.max())
        w /= w.sum()
        if top_k > 0:
            out.append(sorted(_top(list(w), top_k, lambda j: j)))
        else:
            out.append(select_coverage(w, gamma, min_blocks, max_blocks))
    return out


def js_distance(a, b):
    """sqrt of the Jensen-Shannon divergence (natural log) of two
    distributions."""
    m = 0.5 * (a + b)

    def kl(x, y):
        nz = x > 0
        return float(np.sum(x[nz] * np.log(x[nz] / y[nz])))
    return np.sqrt(max(0.5 * kl(a, m) + 0.5 * kl(b, m), 0.0))


def flexprefill_masses(q, k, block, scale=None):
    """The last query block's true attention (the block of position Nk - 1,
    its rows present): each row's softmax over the keys at or before its
    position, averaged over the rows; (columns, slashes), both
    [ceil(Nk / block)]: columns[j] the mass on key block j, slashes[u] the
    mass on the keys with floor((p - k) / block) == u (u = 0: the block of
    diagonals nearest the query)."""
    s = _scale(q.shape[1], scale)
    nq, nk = q.shape[0], k.shape[0]
    tk = (nk + block - 1) // block
    last = query_blocks(nq, nk, block)[1][-1]
    cols, slashes = np.zeros(tk), np.zeros(tk)
    for row in last:
        p = row + nk - nq  # >= 0: the last block holds position Nk - 1
        logits = (k[:p + 1] @ q[row]) * s
        w = np.exp(logits - logits.max())
        w /= w.sum()
        for key in range(p + 1):
            cols[key // block] += w[key]
            slashes[(p - key) // block] += w[key]
    return cols / len(last), slashes / len(last)


def flexprefill_distance(q, k, block, scale=None):
    """The Jensen-Shannon distance between the last query block's true
    attention per key block and its pooled estimate (the softmax of its
    mean query against the mean keys, block_topk_index's scores)."""
    s = _scale(q.shape[1], scale)
    nq, nk = q.shape[0], k.shape[0]
    true, _ = flexprefill_masses(q, k, block, scale)
    last = query_blocks(nq, nk, block)[1][-1]
    logits = (pool(k, block) @ q[last.start:last.stop].mean(0)) * s
    est = np.exp(logits - logits.max())
    est /= est.sum()
    return js_distance(true, est)


def flexprefill_mode(q, k, block, tau, scale=None):
    """'vertical_slash' when the distance exceeds tau, else
    'query_aware'."""
    d = flexprefill_distance(q, k, block, scale)
    return "vertical_slash" if d > tau else "query_aware"


def flexprefill_index(q, k, block, gamma, tau, min_blocks=0, max_blocks=0,
                      scale=None):
    """block_topk with tau > 0, per query block (as block_topk_index) its
    kept key blocks. Query-aware heads: block_topk_index. Vertical-slash
    heads: the fewest largest columns and the fewest largest slash groups
    of the last block's true attention reaching gamma (each clamped to
    [min_blocks, max_blocks], ties to the smaller index); query block I
    (of positions) keeps the kept columns and, per kept group u, key
    blocks I - u - 1 and I - u (those that exist): every pair (p, k) of
    the block with floor((p - k) / block) == u lies in them."""
    if flexprefill_mode(q, k, block, tau, scale) == "query_aware":
        return block_topk_index(q, k, block, gamma=gamma,
                                min_blocks=min_blocks,
                                max_blocks=max_blocks, scale=scale)
    nq, nk = q.shape[0], k.shape[0]
    tk = (nk + block - 1) // block
    cols, slashes = flexprefill_masses(q, k, block, scale)
    kc = select_coverage(cols, gamma, min_blocks, max_blocks)
    ks = select_coverage(slashes, gamma, min_blocks, max_blocks)
    first, rows = query_blocks(nq, nk, block)
    out = []
    for i in range(len(rows)):
        kept = set(kc)
        for u in ks:
            kept.update(j for j in (first + i - u - 1, first + i - u)
                        if 0 <= j < tk)
        out.append(sorted(kept))
    return out


#===----------------------------------------------------------------------===#
# routing (Routing Transformer)
#===----------------------------------------------------------------------===#

def nearest(x, centroids):
    """Index of the centroid of largest dot product per row (ties: the
    smaller index)."""
    scores = x @ centroids.T
    return np.argmax(scores, axis=1)  # argmax returns the first maximum


def kmeans_centroids(k, clusters, iterations):
    """`iterations` of k-means (dot-product assignment, mean update; an
    empty cluster keeps its centroid), seeded with the keys at positions
    floor(i * Nk / clusters)."""
    nk = k.shape[0]
    c = k[[(i * nk) // clusters for i in range(clusters)]].copy()
    for _ in range(iterations):
        a = nearest(k, c)
        for j in range(clusters):
            members = k[a == j]
            if len(members):
                c[j] = members.mean(0)
    return c


def routing_index(q, k, clusters, iterations, centroids=None):
    """(query clusters [Nq], key clusters [Nk])."""
    c = centroids if iterations == 0 else kmeans_centroids(k, clusters,
                                                           iterations)
    if c is None:
        raise ValueError("routing with kmeans_iterations = 0 needs the "
                         "engine's centroids")
    return nearest(q, c), nearest(k, c)


def routing_mask(qc, kc):
    return qc[:, None] == kc[None, :]


#===----------------------------------------------------------------------===#
# Attention over a mask, and the recall of dense attention mass
#===----------------------------------------------------------------------===#

def masked_attention(q, k, v, mask, scale=None):
    """float64 attention; rows without keys give 0."""
    s = _scale(q.shape[1], scale)
    logits = np.where(mask, (q @ k.T) * s, -np.inf)
    mx = logits.max(1, keepdims=True)
    mx = np.where(np.isfinite(mx), mx, 0)
    w = np.exp(logits - mx)
    z = w.sum(1, keepdims=True)
    w = np.where(z > 0, w / np.where(z > 0, z, 1), 0)
    return w @ v


def recall(q, k, mask, reference_mask, scale=None):
    """Mean over rows of the reference attention's mass on the mask."""
    s = _scale(q.shape[1], scale)
    logits = np.where(reference_mask, (q @ k.T) * s, -np.inf)
    mx = logits.max(1, keepdims=True)
    rows = np.isfinite(mx[:, 0])
    w = np.exp(logits[rows] - mx[rows])
    w /= w.sum(1, keepdims=True)
    return float((w * mask[rows]).sum(1).mean())
