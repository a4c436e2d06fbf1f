"""tessera.torch on a bundle with dynamic groups (CPU): the op with the
engine's centroids equals the binding's output, goes through
torch.compile(fullgraph) and opcheck, and the FlexAttention exports refuse
the layer by name (its tiles depend on the input)."""
import sys

import numpy as np
import torch

import tessera
import tessera.torch as tt

bundle = sys.argv[1]
torch.manual_seed(0)
H, HKV, D, N = 6, 3, 64, 150
q = torch.randn(1, N, H, D)
k = torch.randn(1, N, HKV, D)
v = torch.randn(1, N, HKV, D)
cent = torch.randn(H, 3, D)
o, lse = tt.attention(q, k, v, bundle, 0, centroids=cent)
b = tessera.Context("cpu").load(bundle)
o2, lse2 = b.attention(0, q.numpy(), k.numpy(), v.numpy(),
                       centroids=cent.numpy())
print("op equals the binding:",
      bool(torch.equal(o, torch.from_numpy(o2))) and
      bool(torch.equal(lse, torch.from_numpy(lse2))))
f = torch.compile(lambda a, b_, c, m: tt.attention(a, b_, c, bundle, 0,
                                                   centroids=m),
                  fullgraph=True, backend="aot_eager")
oc, _ = f(q, k, v, cent)
print("torch.compile(fullgraph) matches eager:", bool(torch.equal(oc, o)))
torch.library.opcheck(torch.ops.tessera.attention.default,
                      (q, k, v, bundle, 0, 0.0, cent),
                      test_utils=("test_schema", "test_faketensor"))
print("opcheck: ok")
try:
    tt.attention(q, k, v, bundle, 0)
except tessera.TesseraError as e:
    print("no centroids:", e.status)
for fn in (lambda: tt.mask_mod(bundle, 0, N, N),
           lambda: tt.block_mask(bundle, 0, N, N)):
    try:
        fn()
        print("no error")
    except (ValueError, tessera.TesseraError) as e:
        print("refused:", str(e).split(":")[0], "-",
              "on the input" in str(e))
