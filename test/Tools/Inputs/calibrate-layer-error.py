"""Checks --attn-select's predicted layer errors against the selection run:
for every layer of SELECTED, the relative Frobenius error of its output
against REFERENCE's (both compiled with attn-translate and run by the CPU
runtime on SAMPLE's Q/K/V) is compared with the error the remark in
REMARKS predicts, and the prediction with the remark's max-layer-error.

  calibrate-layer-error.py SAMPLE.npz SELECTED.mlir REFERENCE.mlir REMARKS \
      ATTN_TRANSLATE WORKDIR
"""
import re
import subprocess
import sys

import numpy as np
import tessera

sample, selected, reference, remarks, translate, work = sys.argv[1:7]
found = re.findall(r"layer (\d+): .*predicted output error ([0-9.]+) "
                   r"\(max-layer-error ([0-9.]+)", open(remarks).read())
predicted = {int(x): float(e) for x, e, _ in found}
within = all(float(e) <= float(b) for _, e, b in found)
bundles = []
for name, path in (("selected", selected), ("reference", reference)):
    subprocess.run([translate, path, "-o", f"{work}/{name}"], check=True)
    bundles.append(tessera.Context("cpu").load(f"{work}/{name}"))
data = np.load(sample)
worst = 0.0
for layer, e in sorted(predicted.items()):
    q, k, v = (data[f"{x}{layer}"][None] for x in "qkv")
    o_s, _ = bundles[0].attention(layer, q, k, v)
    o_r, _ = bundles[1].attention(layer, q, k, v)
    o_s, o_r = o_s.astype(np.float64), o_r.astype(np.float64)
    measured = np.linalg.norm(o_s - o_r) / np.linalg.norm(o_r)
    print(f"layer {layer}: predicted {e:.4f}, measured {measured:.4f}")
    worst = max(worst, abs(measured - e))
print("layers", len(predicted))
print("predictions within 1e-3:", worst < 1e-3)
print("within the budget:", within)
