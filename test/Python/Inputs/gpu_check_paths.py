"""A bundle with two kernel paths for bench/gpu_check.py's test.

  gpu_check_paths.py SRC_BUNDLE OUT_BUNDLE

Copies SRC_BUNDLE to OUT_BUNDLE, tags its attention kernels (and their
per-sequence twins) "path": "mma_sync", "arch": "sm_80" and adds a copy of each named *_wgmma with
"path": "wgmma", "arch": "sm_90a" and 64 x 128 tiles (the shape a Hopper
path's manifest may take; the CPU executor runs the schedule, whichever
kernel is named). Then prints what gpu_check.py makes of it: the paths,
each variant's layer kernels, and which archs a device of compute
capability 80 or 90 runs.
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "..", "bench"))
import gpu_check  # noqa: E402

src, out = sys.argv[1], sys.argv[2]
shutil.copytree(src, out)
path = os.path.join(out, "manifest.json")
m = json.load(open(path))
extra = []
for k in m["kernels"]:
    # The attention kernels and their per-sequence twins are mma.sync ones
    # (the merge and fill kernels belong to no path).
    if k.get("kind") in ("attention", "attention_seq"):
        k.update(path="mma_sync", arch="sm_80")
    if k.get("kind") == "attention":
        extra.append(dict(k, name=k["name"] + "_wgmma", path="wgmma",
                          arch="sm_90a", block_q=64, block_k=128))
m["kernels"] += extra
json.dump(m, open(path, "w"), indent=1)

print("paths:", gpu_check.kernel_paths(m))
work = tempfile.mkdtemp()
for tag, d, vm, arch in gpu_check.path_variants(out, m, work):
    print(f"variant {tag}: arch {arch}, dir {os.path.basename(d)}, layer "
          f"kernels {[k['name'] for l in vm['layers'] for k in l['kernels']]}, kernels "
          f"{sorted(k['name'] for k in vm['kernels'])}")
shutil.rmtree(work)
for arch in ("sm_80", "sm_90", "sm_90a", "sm_100a", None):
    print(f"{arch}: sm_80 {gpu_check.arch_runnable(arch, 80)}, "
          f"sm_90 {gpu_check.arch_runnable(arch, 90)}")
