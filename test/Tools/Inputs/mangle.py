#!/usr/bin/env python3
"""Runs attn-opt, attn-viz and attn-translate on damaged pattern files, and
attn-import on damaged MInference configs (--import, --config).

Each damaged file is a truncation, a few mutated bytes, or a number replaced by
a huge or negative value. A run passes when the tool exits with 0 or 1 and
prints no crash report; anything else (a signal, another exit code, a stack
dump) fails the test with the file kept for reproduction.
"""

import argparse
import os
import random
import re
import subprocess
import sys

CRASH_MARKERS = ("Stack dump", "PLEASE submit a bug report", "Assertion",
                 "Segmentation fault", "terminate called")
HUGE = ["99999999999999999999999", "-9223372036854775808",
        "9223372036854775807", "1099511627777", "-1", "0", "4294967296"]


def damage(text, rng):
    kind = rng.randrange(3)
    if kind == 0:
        return text[: rng.randrange(len(text))]
    if kind == 1:
        chars = list(text)
        for _ in range(rng.randint(1, 4)):
            chars[rng.randrange(len(chars))] = rng.choice("<>[](){},=#@.-0123456789 \n\"x\\u")
        return "".join(chars)
    numbers = list(re.finditer(r"-?\d+", text))
    if not numbers:
        return text
    m = rng.choice(numbers)
    return text[: m.start()] + rng.choice(HUGE) + text[m.end():]


def run(cmd):
    proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          timeout=60)
    err = proc.stderr.decode(errors="replace")
    ok = proc.returncode in (0, 1) and not any(m in err for m in CRASH_MARKERS)
    return ok, proc.returncode, err


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cases", type=int, default=100)
    ap.add_argument("--out", required=True)
    ap.add_argument("--opt", required=True)
    ap.add_argument("--viz", required=True)
    ap.add_argument("--translate", required=True)
    ap.add_argument("--import", dest="import_bin")
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    sources = [open(f).read() for f in args.files]
    runs = 0
    for i in range(args.cases):
        text = damage(rng.choice(sources), rng)
        path = os.path.join(args.out, f"case{i}.mlir")
        with open(path, "w") as f:
            f.write(text)
        cmds = [
            [args.opt, path, "--canonicalize", "--attn-report=q-len=32", "-o",
             os.devnull],
            [args.viz, path, "--layer", str(rng.randrange(3)), "--head",
             str(rng.randrange(4)), "--q-len", "9", "--k-len", "11"],
            [args.translate, path, "--emit=manifest"],
        ]
        if args.import_bin and args.config:
            config = damage(open(rng.choice(args.config)).read(), rng)
            config_path = os.path.join(args.out, f"case{i}.json")
            with open(config_path, "w") as f:
                f.write(config)
            cmds.append([args.import_bin, config_path, "--kv-heads",
                         str(rng.choice([1, 2, 4])), "-o", os.devnull])
        for cmd in cmds:
            ok, code, err = run(cmd)
            runs += 1
            if not ok:
                print(f"CRASH: exit {code}: {' '.join(cmd)}\n{err}")
                return 1
    print(f"no crash in {runs} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
