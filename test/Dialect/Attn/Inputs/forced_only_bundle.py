"""Runs layer 0 of a bundle holding
#attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 1,
first_columns = 4>> on the CPU: every row must see exactly the keys 0-3
at or before it (the forced columns, whatever the input), against float64
attention."""
import sys

import numpy as np

import tessera

b = tessera.Context("cpu").load(sys.argv[1])
n, d = 40, 64
rng = np.random.default_rng(1)
q, k, v = (rng.standard_normal((1, n, 1, d)).astype(np.float32)
           for _ in range(3))
o, lse = b.attention(0, q, k, v)
qh, kh, vh = (x[0, :, 0, :].astype(np.float64) for x in (q, k, v))
logits = np.where((np.arange(n)[None, :] < 4) &
                  (np.arange(n)[None, :] <= np.arange(n)[:, None]),
                  qh @ kh.T / np.sqrt(d), -np.inf)
w = np.exp(logits - logits.max(1, keepdims=True))
want = (w / w.sum(1, keepdims=True)) @ vh
err = np.abs(o[0, :, 0, :] - want).max()
print("forced columns alone: max error below 1e-5:", bool(err < 1e-5))
