"""The float64 references of the dynamic patterns' index builders on cases
derived by hand (selection rules, ties, forced entries, alignment), and on
inputs with planted structure that they must find."""
import sys

import numpy as np

import dynamic_reference as ref

failures = 0


def check(name, got, want):
    global failures
    ok = got == want if not isinstance(want, float) else abs(got - want) < 1e-12
    print(f"{name}: {'ok' if ok else 'FAILED'}" +
          ("" if ok else f" (got {got}, want {want})"))
    failures += 0 if ok else 1


# Selection: forced entries count towards the budgets; ties to the smaller
# column and to the diagonal nearer the query.
cols = [0.1, 0.5, 0.2, 0.5, 0.0, 0.3]
diags = {-5: 0.1, -4: 0.4, -3: 0.4, -2: 0.0, -1: 0.2, 0: 0.9}
check("vs: 3 columns, 1 forced", ref.select_vertical_slash(
    cols, diags, 3, 3, 1, 1), ([0, 1, 3], [-4, -3, 0]))
check("vs: column tie to the smaller", ref.select_vertical_slash(
    cols, diags, 2, 2, 1, 1), ([0, 1], [-3, 0]))
check("vs: forced beyond the budget", ref.select_vertical_slash(
    cols, diags, 1, 1, 3, 2)[0], [0, 1, 2])
check("vs: forced diagonals beyond the budget", ref.select_vertical_slash(
    cols, diags, 1, 1, 0, 3)[1], [-2, -1, 0])
check("vs: nothing forced", ref.select_vertical_slash(
    cols, diags, 1, 2, 0, 0), ([1], [-3, 0]))

# Scores: q = 0 gives uniform causal attention. Nq = Nk = 4, last 2 rows:
# row 2 spreads 1/3 over keys 0..2, row 3 1/4 over keys 0..3.
q, k = np.zeros((4, 2)), np.zeros((4, 2))
c, d = ref.vertical_slash_scores(q, k, 2)
check("scores: columns", [round(x, 12) for x in c],
      [round(7 / 12, 12)] * 3 + [0.25])
check("scores: diagonals", {x: round(y, 12) for x, y in d.items()},
      {-3: 0.25, -2: round(7 / 12, 12), -1: round(7 / 12, 12),
       0: round(7 / 12, 12)})
# Nq < Nk: the two queries sit at positions 2 and 3: the same sums.
c2, d2 = ref.vertical_slash_scores(np.zeros((2, 2)), k, 2)
check("scores: bottom-right alignment", (list(c2), d2), (list(c), d))
# Nq > Nk: rows before the first key see nothing and add nothing.
c3, _ = ref.vertical_slash_scores(np.zeros((6, 2)), np.zeros((2, 2)), 3)
check("scores: rows before the first key", [round(x, 12) for x in c3],
      [round(1 + 0.5, 12), 0.5])

mask = ref.vertical_slash_mask(4, 4, [0], [0])
check("mask: column 0 and the diagonal", mask.astype(int).tolist(),
      [[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 0, 1]])

# Planted structure: keys 3 and 17 attract every query (an extra dimension)
# as strongly as each query matches the key 5 positions back (one-hot
# positions): a third of each row's mass each.
n = 32
q = np.zeros((n, n + 1))
k = np.zeros((n, n + 1))
for i in range(n):
    q[i, n] = 1.0
    if i >= 5:
        q[i, i - 5] = 12.0
    k[i, i] = 1.0
k[3, n] = k[17, n] = 12.0
cols, diag = ref.vertical_slash_index(q, k, last_q=8, vertical=2, slash=1,
                                      scale=1.0)
check("planted: columns found", cols, [3, 17])
check("planted: diagonal found", diag, [-5])
m = ref.vertical_slash_mask(n, n, cols, diag) & np.tri(n, dtype=bool)
# Rows 0..2 see only keys 0..2, where nothing is planted (recall 0); from
# row 5 on, every row sees both columns and its diagonal.
r = ref.recall(q[5:], k, m[5:], np.tri(n, dtype=bool)[5:], scale=1.0)
check("planted: recall above 0.99", r > 0.99, True)

# Coverage: fewest largest blocks reaching gamma, clamped.
probs = [0.1, 0.4, 0.1, 0.4]
check("coverage 0.5", ref.select_coverage(probs, 0.5, 0, 0), [1, 3])
check("coverage 0.85", ref.select_coverage(probs, 0.85, 0, 0), [0, 1, 3])
check("coverage with min_blocks", ref.select_coverage(probs, 0.3, 3, 0),
      [0, 1, 3])
check("coverage with max_blocks", ref.select_coverage(probs, 0.85, 0, 1), [1])
check("coverage 1.0 takes all", ref.select_coverage(probs, 1.0, 0, 0),
      [0, 1, 2, 3])
check("pooling, short last block", ref.pool(np.arange(5.0)[:, None], 2)[:, 0]
      .tolist(), [0.5, 2.5, 4.0])
qz, kz = np.zeros((6, 2)), np.zeros((8, 2))
check("top_k ties to the smaller block", ref.block_topk_index(
    qz, kz, 2, top_k=2), [[0, 1]] * 3)
# A planted block: keys 4..5 attract queries 0..1.
kk = np.zeros((8, 2))
kk[4:6, 0] = 5.0
qq = np.zeros((6, 2))
qq[0:2, 0] = 5.0
check("gamma finds the planted block", ref.block_topk_index(
    qq, kk, 2, gamma=0.9, scale=1.0)[0], [2])
# Query blocks are blocks of positions p = q + Nk - Nq (hand-derived).
check("query blocks, Nq < Nk", (lambda f, r: (f, [(x.start, x.stop)
      for x in r]))(*ref.query_blocks(3, 5, 2)), (1, [(0, 2), (2, 3)]))
check("query blocks, Nq > Nk", (lambda f, r: (f, [(x.start, x.stop)
      for x in r]))(*ref.query_blocks(5, 3, 2)), (-1, [(0, 2), (2, 4), (4, 5)]))
check("query blocks, Nk - Nq a multiple", (lambda f, r: (f, [(x.start, x.stop)
      for x in r]))(*ref.query_blocks(64, 128, 64)), (1, [(0, 64)]))
# Nq = 64, Nk = 96, block 64, top_k 1: rows 0-31 (positions 32-63) pool to
# +e0 and keep key block 0 (keys +e0); rows 32-63 (positions 64-95) pool to
# -e0 and keep key block 1 (keys -e0). By row index, all 64 rows would pool
# to 0 and tie to block 0.
qp, kp = np.zeros((64, 2)), np.zeros((96, 2))
qp[:32, 0], qp[32:, 0] = 1.0, -1.0
kp[:64, 0], kp[64:, 0] = 1.0, -1.0
lists = ref.block_topk_index(qp, kp, 64, top_k=1)
check("block top-k by position: lists", lists, [[0], [1]])
m = ref.block_topk_mask(64, 96, 64, lists)
check("block top-k by position: rows 0-31 see key block 0",
      bool(m[:32, :64].all() and not m[:32, 64:].any()), True)
check("block top-k by position: rows 32-63 see key block 1",
      bool(m[32:, 64:].all() and not m[32:, :64].any()), True)
# Nq = 64, Nk = 128 (the review's case): one query block (1), never empty.
check("block top-k, Nk - Nq = block: every row keeps a block", bool(
    ref.block_topk_mask(64, 128, 64, ref.block_topk_index(
        np.ones((64, 2)), np.ones((128, 2)), 64, top_k=1)).any(1).all()),
    True)

check("js: identical", ref.js_distance(np.array([0.5, 0.5]),
                                       np.array([0.5, 0.5])), 0.0)
check("js: disjoint", round(ref.js_distance(np.array([1.0, 0.0]),
                                            np.array([0.0, 1.0])), 12),
      round(float(np.sqrt(np.log(2))), 12))
check("flexprefill: uniform is query-aware", ref.flexprefill_mode(
    np.zeros((8, 2)), np.zeros((8, 2)), 2, 0.1), "query_aware")
# One key dominates the last block's true attention; the pooled estimate
# spreads it: far apart, so vertical-slash.
kq = np.zeros((8, 2))
kq[1, 0] = 10.0
kq[0, 0] = -10.0
qv = np.zeros((8, 2))
qv[6:, 0] = 3.0
check("flexprefill: concentrated is vertical-slash", ref.flexprefill_mode(
    qv, kq, 2, 0.1, scale=1.0), "vertical_slash")
# The last query block's true attention, by hand: block 2, zero queries
# (uniform over the keys at or before each position); the last block holds
# positions 4 and 5: row 4 spreads 1/5 over keys 0-4, row 5 1/6 over 0-5.
# Columns: blocks {0,1}, {2,3}: (2/5 + 2/6) / 2; block {4,5}: (1/5 + 2/6)
# / 2. Slash groups u = floor((p - k) / 2) the same by symmetry.
hand = np.array([(0.4 + 1 / 3) / 2, (0.4 + 1 / 3) / 2, (0.2 + 1 / 3) / 2])
for nq in (6, 3):  # Nq = 3: rows 1, 2 at positions 4, 5 (the same block)
    c, sl = ref.flexprefill_masses(np.zeros((nq, 2)), np.zeros((6, 2)), 2)
    check(f"flexprefill masses by hand (Nq {nq})",
          bool(np.allclose(c, hand) and np.allclose(sl, hand)), True)
# The concentrated case's index: the last block (positions 6, 7) puts its
# mass on key 1: column block 0; slash groups u = 2 (p - k = 5) and u = 3
# (6), nearly half each, both needed for gamma 0.9. Query block I keeps
# block 0 and I - u - 1, I - u: block 3 also key block 1 (from u = 2).
check("flexprefill index, vertical-slash mode", ref.flexprefill_index(
    qv, kq, 2, 0.9, 0.1, scale=1.0), [[0], [0], [0], [0, 1]])
check("flexprefill index, query-aware mode is block_topk_index",
      ref.flexprefill_index(qv, kq, 2, 0.9, 0.9, scale=1.0) ==
      ref.block_topk_index(qv, kq, 2, gamma=0.9, scale=1.0), True)

# Routing: nearest centroid by dot product, ties to the smaller index.
cents = np.array([[1.0, 0.0], [0.0, 1.0]])
qc, kc = ref.routing_index(np.array([[2.0, 1.0], [1.0, 2.0], [1.0, 1.0]]),
                           np.array([[0.0, 3.0]]), 2, 0, cents)
check("routing: queries", qc.tolist(), [0, 1, 0])
check("routing: keys", kc.tolist(), [1])
kr = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
c1 = ref.kmeans_centroids(kr, 2, 1)
check("k-means: one iteration", np.round(c1, 12).tolist(),
      [[0.95, 0.05], [0.05, 0.95]])
check("routing: k-means clusters", ref.routing_index(
    kr, kr, 2, 1)[1].tolist(), [0, 0, 1, 1])
check("routing mask", ref.routing_mask(np.array([0, 1]), np.array([1, 0, 1]))
      .astype(int).tolist(), [[0, 1, 0], [1, 0, 1]])
try:
    ref.routing_index(kr, kr, 2, 0)
    check("routing without centroids fails", False, True)
except ValueError:
    check("routing without centroids fails", True, True)

out = ref.masked_attention(np.zeros((2, 2)), np.zeros((2, 2)),
                           np.array([[1.0, 2.0], [3.0, 4.0]]),
                           np.array([[False, False], [True, True]]))
check("attention: empty rows give 0", out.tolist(), [[0.0, 0.0], [2.0, 3.0]])

# Documented edge cases (docs/patterns.md, "Dynamic patterns").
# Forced entries alone: vertical = slash = 0 keeps the first columns and
# the diagonals nearest the query, and nothing else.
check("vs: forced entries alone", ref.select_vertical_slash(
    [0.1, 0.5, 0.2, 0.5, 0.0, 0.9], diags, 0, 0, 4, 2),
    ([0, 1, 2, 3], [-1, 0]))
# A slash budget above the Nk diagonals d <= 0 keeps all of them: with
# causality, every key at or before the query (Nq > Nk: rows before the
# first key keep nothing).
rng = np.random.default_rng(3)
qa, ka = rng.standard_normal((9, 4)), rng.standard_normal((6, 4))
_, da = ref.vertical_slash_index(qa, ka, 9, 0, 1 << 40)
check("vs: slash above the diagonals keeps all", da, list(range(-5, 1)))
p_of = np.arange(9)[:, None] + 6 - 9
check("vs: all diagonals are the causal mask", ref.vertical_slash_mask(
    9, 6, [], da).tolist(), (np.arange(6)[None, :] <= p_of).tolist())
# The index's softmax uses the call's scale (RuntimeTest's
# IndexScoresUseTheCallScale): row 6 scores all keys alike, row 7 key 7 at
# 2 and key 0 at 1; one column: key 0 at scale 1/8, key 7 at scale 8.
qs, ks = np.zeros((8, 64)), np.zeros((8, 64))
qs[7, 0], ks[0, 0], ks[7, 0] = 1.0, 1.0, 2.0
check("vs: scale 1/8 keeps column 0", ref.vertical_slash_index(
    qs, ks, 2, 1, 0, scale=0.125)[0], [0])
check("vs: scale 8 keeps column 7", ref.vertical_slash_index(
    qs, ks, 2, 1, 0, scale=8.0)[0], [7])
# k-means keeps an empty cluster's centroid (RuntimeTest's
# RoutingKeepsAnEmptyClustersCentroid): every key is nearer (dot product)
# to the seed (2, -1) than to (1, 0).
ke = np.array([[1.0, 0.0]] + [[2.0, -1.0]] * 15)
ce = ref.kmeans_centroids(ke, 2, 2)
check("k-means: empty cluster keeps its centroid", ce.tolist(),
      [[1.0, 0.0], [31 / 16, -15 / 16]])
check("routing: query nearest the empty cluster", ref.routing_index(
    np.array([[0.5, 1.0], [-1.0, -1.5]]), ke, 2, 2)[0].tolist(), [0, 1])

print(f"{failures} failures")
sys.exit(1 if failures else 0)
