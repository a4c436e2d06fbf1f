"""What bench/gpu_check.py makes of a bundle's kernel paths.

  gpu_check_paths.py BUNDLE

Prints the paths of BUNDLE's manifest, each variant (its arch, whether it
is the bundle itself) with the tile its layers' kernels visit on that path,
which archs a device of compute capability 80 or 90 runs; then the same for
the manifest with the "path" and "arch" fields removed (a bundle from
before the paths: one "default" path).
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "..", "..", "bench"))
import gpu_check  # noqa: E402

bdir = sys.argv[1]
m = json.load(open(os.path.join(bdir, "manifest.json")))


def show(m):
    print("paths:", gpu_check.kernel_paths(m))
    for tag, d, vm, arch in gpu_check.path_variants(bdir, m):
        tiles = [gpu_check.kernel_blocks(vm, l, tag) for l in vm["layers"]]
        print(f"variant {tag}: arch {arch}, the bundle itself "
              f"{d == bdir and vm is m}, tiles {tiles}")


show(m)
for k in m["kernels"]:
    k.pop("path", None)
    k.pop("arch", None)
show(m)
for arch in ("sm_80", "sm_90", "sm_90a", "sm_100a", None):
    print(f"{arch}: sm_80 {gpu_check.arch_runnable(arch, 80)}, "
          f"sm_90 {gpu_check.arch_runnable(arch, 90)}")
