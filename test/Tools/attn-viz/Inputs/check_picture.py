#!/usr/bin/env python3
"""Reads an attn-viz picture (SVG or PNG) back and checks it against the text
masks attn-viz prints from the reference semantics.

  check_picture.py VIZ PATTERN --layer L --q-len N [--k-len M] PICTURE

For every panel: at the element level every cell must be the allowed colour
exactly where the reference allows the pair; at the block level each cell's
tiles are counted from the reference mask: a full cell must be all allowed, an
empty one none, a cell with some allowed and some not must be partial, and a
partial cell's shade must be the one of its exact density (with --tolerance,
of a density that close to it: sampled pictures). The caption's density must
be the reference's (with --tolerance, a '~' caption that close to it). The PNG is decoded here (zlib and the five
PNG filters), without libpng.
"""
import argparse
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
import zlib

FULL = (0x1F, 0x4E, 0x9C)
LOW = (0xFD, 0xE9, 0xC8)
HIGH = (0xD9, 0x5F, 0x02)
WHITE = (0xFF, 0xFF, 0xFF)


def shade(density):
    t = min(max(density, 0.0), 1.0)
    return tuple(int(round(a + (b - a) * t)) for a, b in zip(LOW, HIGH))


def reference_mask(viz, pattern, layer, head, nq, nk):
    out = subprocess.run([viz, pattern, "--layer", str(layer), "--head",
                          str(head), "--q-len", str(nq), "--k-len", str(nk)],
                         check=True, stdout=subprocess.PIPE, text=True).stdout
    rows = out.splitlines()
    assert len(rows) == nq and all(len(r) == nk for r in rows), "bad text mask"
    return [[c == "#" for c in r] for r in rows]


def cell_stats(mask, r, c, row_span, col_span):
    rows = mask[r * row_span:(r + 1) * row_span]
    cells = [row[c * col_span:(c + 1) * col_span] for row in rows]
    total = sum(len(x) for x in cells)
    allowed = sum(sum(x) for x in cells)
    return allowed, total


def shade_near(got, density, tolerance):
    """Whether `got` is the shade of a density within `tolerance` of
    `density` (each channel is monotone in the density; +-1 for rounding)."""
    lo = shade(max(density - tolerance, 0.0))
    hi = shade(min(density + tolerance, 1.0))
    return all(min(a, b) - 1 <= g <= max(a, b) + 1
               for g, a, b in zip(got, lo, hi))


def check_panel(mask, level, rows, cols, row_span, col_span, colour_at,
                where, errors, tolerance=0.0):
    nq, nk = len(mask), len(mask[0])
    if level == "element" and (rows, cols, row_span, col_span) != (nq, nk, 1,
                                                                   1):
        errors.append(f"{where}: {rows}x{cols} cells for {nq}x{nk} pairs")
        return
    if -(-nq // row_span) != rows or -(-nk // col_span) != cols:
        errors.append(f"{where}: {rows}x{cols} cells of {row_span}x{col_span} "
                      f"do not cover {nq}x{nk}")
        return
    for r in range(rows):
        for c in range(cols):
            allowed, total = cell_stats(mask, r, c, row_span, col_span)
            if total == 0:
                continue
            got = colour_at(r, c)
            if allowed == total:
                ok = got == FULL or (level == "block" and got == shade(1.0))
            elif allowed == 0:
                ok = got == WHITE or (level == "block" and got == shade(0.0))
            else:
                ok = level == "block" and shade_near(got, allowed / total,
                                                     tolerance)
            if not ok:
                errors.append(f"{where}: cell ({r}, {c}) is {got}, the "
                              f"reference allows {allowed} of {total} pairs")
                if len(errors) > 20:
                    return


def caption_ok(texts, head, density, tolerance):
    """A caption ending in 'head H (D%)', or '(~D%)' within `tolerance`."""
    exact = f"head {head} ({100 * density:.2f}%)"
    if any(t and t.endswith(exact) for t in texts):
        return True
    for t in texts:
        m = re.search(rf"head {head} \(~([0-9.]+)%\)$", t or "")
        if m and tolerance > 0 and \
                abs(float(m.group(1)) - 100 * density) <= 100 * tolerance:
            return True
    return False


def check_svg(path, masks, errors, tolerance):
    root = ET.parse(path).getroot()
    ns = "{http://www.w3.org/2000/svg}"
    panels = [g for g in root.iter(ns + "g") if g.get("class") == "cells"]
    if len(panels) != len(masks):
        errors.append(f"{len(panels)} panels for {len(masks)} heads")
    texts = [t.text for t in root.iter(ns + "text")]
    for g in panels:
        head = int(g.get("data-head"))
        rows, cols = int(g.get("data-rows")), int(g.get("data-cols"))
        cell = int(g.get("data-cell"))
        colours = {}
        for rect in g.iter(ns + "rect"):
            if rect.get("class") not in ("full", "partial"):
                continue
            x, y = int(rect.get("x")), int(rect.get("y"))
            w, h = int(rect.get("width")), int(rect.get("height"))
            fill = rect.get("fill")
            rgb = tuple(int(fill[i:i + 2], 16) for i in (1, 3, 5))
            for cc in range(x // cell, (x + w) // cell):
                colours[(y // cell, cc)] = rgb
        mask = masks[head]
        check_panel(mask, g.get("data-level"), rows, cols,
                    int(g.get("data-row-span")), int(g.get("data-col-span")),
                    lambda r, c: colours.get((r, c), WHITE),
                    f"head {head}", errors, tolerance)
        density = sum(map(sum, mask)) / (len(mask) * len(mask[0]))
        if not caption_ok(texts, head, density, tolerance):
            errors.append(f"no caption for head {head} at "
                          f"{100 * density:.2f}%")


def read_png(path):
    data = open(path, "rb").read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise SystemExit("not a PNG")
    pos, idat, text = 8, b"", {}
    width = height = None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if zlib.crc32(kind + body) != struct.unpack(
                ">I", data[pos + 8 + length:pos + 12 + length])[0]:
            raise SystemExit(f"bad CRC in {kind}")
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", body[:10])
            assert (depth, ctype) == (8, 2), "expected 8-bit RGB"
        elif kind == b"IDAT":
            idat += body
        elif kind == b"tEXt":
            key, value = body.split(b"\0", 1)
            text.setdefault(key.decode(), []).append(value.decode())
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * 3
    pixels, prev = [], bytearray(stride)
    for y in range(height):
        f = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - 3] if i >= 3 else 0
            b = prev[i]
            c = prev[i - 3] if i >= 3 else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pr = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                line[i] = (line[i] + pr) & 255
        pixels.append(bytes(line))
        prev = line
    return width, height, pixels, text


def check_png(path, masks, errors, tolerance):
    width, height, pixels, text = read_png(path)
    panels = text.get("Tessera-Cells", [])
    if len(panels) != len(masks):
        errors.append(f"{len(panels)} panels for {len(masks)} heads")
    for p in panels:
        f = dict(kv.split("=") for kv in p.split())
        head, x, y, cell = (int(f[k]) for k in ("head", "x", "y", "cell"))
        rows, cols = int(f["rows"]), int(f["cols"])

        def colour_at(r, c):
            px, py = x + c * cell + cell // 2, y + r * cell + cell // 2
            return tuple(pixels[py][3 * px:3 * px + 3])
        mask = masks[head]
        rspan, cspan = int(f["rspan"]), int(f["cspan"])
        level = "element" if (rspan, cspan) == (1, 1) and \
            (rows, cols) == (len(mask), len(mask[0])) else "block"
        # Grid lines are drawn only between cells of at least 4 pixels, on a
        # cell's first row or column: never on its centre pixel.
        check_panel(mask, level, rows, cols, rspan, cspan, colour_at,
                    f"head {head}", errors, tolerance)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("viz")
    ap.add_argument("pattern")
    ap.add_argument("picture")
    ap.add_argument("--layer", type=int, required=True)
    ap.add_argument("--heads", type=int, required=True,
                    help="heads of the layer (or the one head's index + 1)")
    ap.add_argument("--head", type=int)
    ap.add_argument("--q-len", type=int, required=True)
    ap.add_argument("--k-len", type=int)
    ap.add_argument("--tolerance", type=float, default=0.0,
                    help="sampled pictures: how far a partial cell's shade "
                    "and a '~' caption may be from the exact density")
    a = ap.parse_args()
    nk = a.k_len or a.q_len
    heads = [a.head] if a.head is not None else range(a.heads)
    masks = {h: reference_mask(a.viz, a.pattern, a.layer, h, a.q_len, nk)
             for h in heads}
    errors = []
    if a.picture.endswith(".svg"):
        check_svg(a.picture, masks, errors, a.tolerance)
    else:
        check_png(a.picture, masks, errors, a.tolerance)
    for e in errors[:20]:
        print("error:", e)
    if errors:
        sys.exit(1)
    print(f"ok: {len(masks)} heads")


if __name__ == "__main__":
    main()
