#!/usr/bin/env python3
"""The sm_90a kernels of bundles, from their SASS (issue 18, item 5).

  hopper-sass.py [--bin-dir BIN] [--build BUILD] [--nvdisasm PATH]
                 [--write PERFORMANCE.md] INPUT...

Each INPUT is a pattern file (attn-translate makes its bundle) or a bundle
directory. Each bundle is compiled as the runtime compiles it on compute
capability 9.x (NVRTC --gpu-architecture=sm_90a) and every `_wgmma` kernel
its layers and their dynamic groups name is disassembled. A row per
kernel: ptxas's registers at launch, stack and spill bytes; the registers
the producer and the consumers hold after setmaxnreg (USETMAXREG's
operands; "-" for a kernel that sets none); the
count of HGMMA, UTMALDG (TMA loads) and LDL/STL (local memory)
instructions.

Exit status 1 when a layer of head_dim 64 or 128 with attention kernels,
or a dynamic group of such a layer, names no sm_90a twin, when a kernel
spills or touches local memory, or lacks HGMMA or UTMALDG; 2 when a tool is
missing. --write replaces the block between
`<!-- hopper-sass -->` and `<!-- /hopper-sass -->` in the given file with
the table (the date, NVRTC's and the command line above it).
"""

import argparse
import datetime
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sasslib  # noqa: E402


def bundle_dir(path, bin_dir, tmp):
    if os.path.isdir(path):
        return path
    out = os.path.join(tmp, os.path.splitext(os.path.basename(path))[0])
    sasslib.emit_bundle(bin_dir, path, out)
    return out


def kernel_row(name, ptxas, fn):
    counts = {"HGMMA": 0, "UTMALDG": 0, "local": 0}
    regs = {}
    for i in fn.ins:
        if i.stem == "HGMMA":
            counts["HGMMA"] += 1
        elif i.stem == "UTMALDG":
            counts["UTMALDG"] += 1
        elif i.stem in ("LDL", "STL"):
            counts["local"] += 1
        elif i.stem == "USETMAXREG":
            m = re.search(r"0x([0-9a-f]+)\s*$", i.args)
            if m:
                kind = "producer" if "DEALLOC" in i.op else "consumers"
                regs[kind] = int(m.group(1), 16)
    return dict(kernel=name, regs=ptxas.get("regs", 0),
                stack=ptxas.get("stack", 0), spills=ptxas.get("spills", 0),
                producer=regs.get("producer"), consumers=regs.get("consumers"),
                **counts)


def check_bundle(bdir, nvdisasm, tmp):
    manifest = json.load(open(os.path.join(bdir, "manifest.json")))
    wanted = []
    problems = []
    for layer in manifest["layers"]:
        twins = (layer.get("wgmma") or {}).get("kernels", [])
        if layer["head_dim"] in (64, 128) and layer["kernels"] and not twins:
            problems.append(f"layer {layer['index']} (head_dim "
                            f"{layer['head_dim']}) has no sm_90a kernel")
        wanted += [k for k in twins if k not in wanted]
        for g in layer.get("dynamic_groups", []):
            dyn = (g.get("wgmma") or {}).get("kernels", [])
            if layer["head_dim"] in (64, 128) and not dyn:
                problems.append(f"layer {layer['index']}'s {g['family']} "
                                f"group has no sm_90a kernel")
            wanted += [k for k in dyn if k not in wanted]
    source = open(os.path.join(bdir, manifest.get("source", "bundle.cu"))).read()
    cubin, version, report = sasslib.nvrtc_compile(
        source, "sm_90a", manifest.get("nvrtc_options", ["-std=c++17"]))
    fns = sasslib.parse_sass(sasslib.disassemble(nvdisasm, cubin, tmp))
    rows = []
    for name in wanted:
        if name not in fns:
            problems.append(f"{name} is not in the sm_90a binary")
            continue
        r = kernel_row(name, report.get(name, {}), fns[name])
        rows.append(r)
        for bad, why in ((r["spills"] or r["stack"], "spills or has a stack"),
                         (r["local"], "touches local memory"),
                         (not r["HGMMA"], "has no HGMMA"),
                         (not r["UTMALDG"], "has no UTMALDG")):
            if bad:
                problems.append(f"{name} {why}")
    return rows, problems, version


def table(results):
    out = ["| bundle | kernel | registers at launch | producer / consumers "
           "after setmaxnreg | stack, spills | HGMMA | UTMALDG | LDL/STL |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for bundle, rows in results:
        for r in rows:
            after = ("-" if r["producer"] is None else
                     f"{r['producer']} / {r['consumers']}")
            out.append(f"| {bundle} | {r['kernel']} | {r['regs']} | "
                       f"{after} | "
                       f"{r['stack']}, {r['spills']} | {r['HGMMA']} | "
                       f"{r['UTMALDG']} | {r['local']} |")
    return "\n".join(out)


def write_block(path, text):
    doc = open(path).read()
    begin, end = "<!-- hopper-sass -->", "<!-- /hopper-sass -->"
    a, b = doc.find(begin), doc.find(end)
    if a < 0 or b < a:
        raise sasslib.Error(f"{path} has no {begin} ... {end} block")
    doc = doc[:a + len(begin)] + "\n" + text + "\n" + doc[b:]
    open(path, "w").write(doc)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+")
    ap.add_argument("--bin-dir", default=os.path.join(sasslib.SRC, "build",
                                                      "bin"))
    ap.add_argument("--build")
    ap.add_argument("--nvdisasm")
    ap.add_argument("--write")
    args = ap.parse_args()
    try:
        nvdisasm = sasslib.find_nvdisasm(args.build, args.nvdisasm)
        results, problems, version = [], [], "?"
        with tempfile.TemporaryDirectory() as tmp:
            for path in args.inputs:
                bdir = bundle_dir(path, args.bin_dir, tmp)
                rows, bad, version = check_bundle(bdir, nvdisasm, tmp)
                name = os.path.basename(os.path.normpath(path))
                results.append((os.path.splitext(name)[0], rows))
                problems += [f"{name}: {p}" for p in bad]
    except sasslib.Error as e:
        print(f"hopper-sass: {e}", file=sys.stderr)
        return e.code
    text = table(results)
    print(text)
    for p in problems:
        print(f"hopper-sass: {p}", file=sys.stderr)
    if args.write:
        cmd = "scripts/hopper-sass.py " + " ".join(
            os.path.relpath(p, sasslib.SRC) if os.path.isabs(p) else p
            for p in args.inputs)
        write_block(args.write, f"{datetime.date.today()}, NVRTC {version} "
                    f"for sm_90a, `{cmd}`:\n\n{text}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
