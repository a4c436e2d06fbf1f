//===- Masks.cpp - partial-tile mask code from run expressions ------------===//
//
// Each leaf of a run expression becomes the code of its two row masks (the
// thread's rows rowPos and rowPos + 8, each in its own frame; a key mask
// is computed once and shifted to row 1's), each combinator their |, & or
// & ~, and the root P<id>Mask::rows (the kernels' form, every key: Nk's
// edge is the kernel's) and ::keep (the u32 keep bits, below Nk). Diagonal
// bands of a small span (listed offsets, or a union of row-relative
// intervals) take one offset table instead of a leaf each. See
// tessera/kernel/Masks.cuh for the frames, the helpers and the choice
// between 32-bit and 64-bit arithmetic.
//
//===----------------------------------------------------------------------===//

#include "tessera/Schedule/Masks.h"
#include "tessera/kernel/OwnedTable.h"
#include "tessera/kernel/Program.h"
// The helpers' constants (kMaskSmall); host-compilable like Program.h.
#include "tessera/kernel/Masks.cuh"

#include <optional>
#include <sstream>

using namespace tessera;
using namespace tessera::schedule;
namespace kn = tessera::kernel;

const char *tessera::schedule::maskFormName(MaskForm form) {
  switch (form) {
  case MaskForm::All:
    return "all";
  case MaskForm::None:
    return "none";
  case MaskForm::Interval:
    return "interval";
  case MaskForm::Periodic:
    return "periodic";
  case MaskForm::Row:
    return "row";
  case MaskForm::Listed:
    return "listed";
  case MaskForm::Predicate:
    return "predicate";
  }
  return "?";
}

namespace {

/// Row lists of at most this many ranges are tested by compares (longer
/// ones by a binary search over their array). Key and offset lists are
/// unions of intervals up to 4 ranges already (the run builder's
/// kInlineRanges).
constexpr size_t kInlineRowRanges = 4;

/// A constant that the clamped 32-bit offsets may be combined with (with
/// the +8 of row 1 and the +1 of an end already added).
bool small(int64_t c) { return c >= -kn::kMaskSmall && c <= kn::kMaskSmall; }

std::string lit64(int64_t v) {
  std::string s = std::to_string(v) + "LL";
  return v < 0 ? "(" + s + ")" : s;
}

std::string lit32(int64_t v) {
  std::string s = std::to_string(v);
  return v < 0 ? "(" + s + ")" : s;
}

/// The periodic set {x : (x - phase) mod period < width} as a 64-bit
/// pattern from 0 (bit i set iff i mod period < width), for small periods.
uint64_t periodPattern(int64_t period, int64_t width) {
  uint64_t m = 0;
  for (int i = 0; i < 64; ++i)
    if (i % period < width)
      m |= uint64_t(1) << i;
  return m;
}

std::string hex(uint64_t v) {
  std::ostringstream os;
  os << "0x" << std::hex << v << "ull";
  return os.str();
}

/// A node's row masks: the names of its variables for rows 0 and 1 (the
/// same name when it does not depend on the row).
struct Rows {
  std::string r0, r1;
};

class MaskEmitter {
public:
  MaskEmitter(const std::string &name, const MaskOptions &options)
      : name(name), options(options) {}

  /// The row masks of `e`, for every key: Nk's edge is the caller's (keep
  /// applies it; the kernels apply it to their last key tile only).
  Rows node(const RunExpr &e) {
    switch (e.kind) {
    case RunExpr::All:
      leaf(MaskForm::All, "every key");
      return one("~0ull");
    case RunExpr::None:
      leaf(MaskForm::None, "no key");
      return one("0ull");
    case RunExpr::Union:
      if (std::optional<Ranges> r = offsetTableRanges(e))
        return offsetTable(*r, std::to_string(e.children.size()) +
                                   " diagonal intervals");
      return combinator(e);
    case RunExpr::Intersect:
    case RunExpr::Difference:
      return combinator(e);
    default:
      break;
    }
    if (!options.closedForms)
      return predicate(e);
    switch (e.kind) {
    case RunExpr::Interval:
      return interval(e);
    case RunExpr::PeriodicK:
    case RunExpr::PeriodicD:
      return periodic(
          e.kind == RunExpr::PeriodicD, e.a, e.b, lit64(e.c),
          setText(e.kind == RunExpr::PeriodicD ? "diagonals d" : "keys k", e));
    case RunExpr::PeriodicP:
      return periodicRows(e);
    case RunExpr::ListedK:
    case RunExpr::ListedD:
    case RunExpr::ListedP:
      return listed(e);
    case RunExpr::Shards:
      return shards(e);
    case RunExpr::Groups:
      return groups(e);
    case RunExpr::Blocks:
      return blocks(e);
    default:
      return predicate(e); // a leaf without a closed form
    }
  }

  std::string name;
  MaskOptions options;
  std::ostringstream decls, code;
  std::vector<MaskForm> forms;

private:
  /// "keys k with (k - 3) mod 8 < 2".
  static std::string setText(const std::string &what, const RunExpr &e) {
    std::string x = what.substr(what.size() - 1);
    if (e.c != 0)
      x = "(" + x + (e.c < 0 ? " + " : " - ") +
          std::to_string(e.c < 0 ? -e.c : e.c) + ")";
    return what + " with " + x + " mod " + std::to_string(e.a) + " < " +
           std::to_string(e.b);
  }

  std::string fresh(const char *prefix) {
    return prefix + std::to_string(vars++);
  }

  void leaf(MaskForm form, const std::string &what) {
    code << "    // leaf " << forms.size() << ": " << maskFormName(form) << ", "
         << what << "\n";
    forms.push_back(form);
  }

  /// A mask that is the same in both rows' frames (all or no keys).
  Rows one(const std::string &expr) {
    std::string n = fresh("m");
    code << "    const u64 " << n << " = " << expr << ";\n";
    return {n, n};
  }

  /// A mask of keys, the same for both rows: `expr` in row 0's frame, row
  /// 1's two bits higher.
  Rows keys(const std::string &expr) {
    std::string n = fresh("m");
    code << "    const u64 " << n << "_0 = " << expr << ";\n"
         << "    const u64 " << n << "_1 = " << n << "_0 << 2;\n";
    return {n + "_0", n + "_1"};
  }

  Rows two(const std::string &e0, const std::string &e1) {
    std::string n = fresh("m");
    code << "    const u64 " << n << "_0 = " << e0 << ";\n"
         << "    const u64 " << n << "_1 = " << e1 << ";\n";
    return {n + "_0", n + "_1"};
  }

  /// A data array of the mask code; returns its name.
  std::string array(const std::vector<int64_t> &values) {
    std::string n = name + "_d" + std::to_string(arrays++);
    decls << "TESSERA_CONST i64 " << n << "[] = {";
    for (size_t i = 0; i < values.size(); ++i)
      decls << (i ? ", " : "") << lit64(values[i]);
    if (values.empty())
      decls << "0";
    decls << "};\n";
    return n;
  }

  std::string rangesArray(const std::vector<std::pair<int64_t, int64_t>> &r) {
    std::vector<int64_t> flat;
    for (auto [lo, hi] : r) {
      flat.push_back(lo);
      flat.push_back(hi);
    }
    return array(flat);
  }

  //===--------------------------------------------------------------------===//
  // Closed forms
  //===--------------------------------------------------------------------===//

  /// keys [max(lo), min(hi)] of each row (p0 = p1 = the row's position):
  /// in row h's frame bit j is key kb + j - 2 h (kb = t.kb), so an atom c is
  /// bit c + 2 h - kb and p + c is bit c + 10 h - d in row h.
  Rows interval(const RunExpr &e) {
    bool perRow = false, wide = false;
    for (const Bound *b : {&e.lo, &e.hi})
      for (const Atom &a : *b) {
        perRow |= a.var != Atom::Const;
        wide |= !small(a.c) || !small(a.c + 9);
      }
    leaf(MaskForm::Interval,
         "keys [" + boundText(e.lo, false) + ", " + boundText(e.hi, true) +
             "]" + (wide ? ", 64-bit" : ""));
    auto bit = [&](const Atom &a, int h, int64_t plus) {
      int64_t c = a.c + plus + (a.var == Atom::Const ? 2 * h : 10 * h);
      std::string base = a.var == Atom::Const ? (wide ? "t.kb" : "t.kbc")
                                              : (wide ? "t.d" : "t.dc");
      return "(" + (wide ? lit64(c) : lit32(c)) + " - " + base + ")";
    };
    // 32-bit bounds go to bitRange as they are (it clamps them); 64-bit
    // ones are clamped to bit indices first.
    auto bound = [&](const Bound &b, bool upper, int h) {
      if (b.empty())
        return std::string(upper ? "64" : "0");
      std::string s = bit(b[0], h, upper ? 1 : 0);
      for (size_t i = 1; i < b.size(); ++i)
        s = std::string(wide ? (upper ? "minI(" : "maxI(")
                             : (upper ? "minInt(" : "maxInt(")) +
            s + ", " + bit(b[i], h, upper ? 1 : 0) + ")";
      if (wide)
        s = "clampBit64(" + s + ")";
      return s;
    };
    auto row = [&](int h) {
      return "bitRange(" + bound(e.lo, false, h) + ", " +
             bound(e.hi, true, h) + ")";
    };
    return perRow ? two(row(0), row(1)) : keys(row(0));
  }

  static std::string boundText(const Bound &b, bool upper) {
    if (b.empty())
      return upper ? "end" : "0";
    auto one = [](const Atom &a) {
      if (a.var == Atom::Const)
        return std::to_string(a.c);
      if (a.c == 0)
        return std::string("p");
      return std::string("p ") + (a.c < 0 ? "- " : "+ ") +
             std::to_string(a.c < 0 ? -a.c : a.c);
    };
    if (b.size() == 1)
      return one(b[0]);
    std::string s = upper ? "min(" : "max(";
    for (size_t i = 0; i < b.size(); ++i)
      s += (i ? ", " : "") + one(b[i]);
    return s + ")";
  }

  /// The bits of {x : (x - phase) mod period < width} of a row whose bit 0
  /// is x = kb (keys; row 1: the same two bits higher) or x = d
  /// (diagonals; row 1: d - 10, 8 rows later and its frame 2 bits lower). `phase` is an i64
  /// expression in [0, 2^62]. One phase r per row (row 1's by one step
  /// from row 0's), then a shifted constant (period <= 62) or the two
  /// occurrences that can meet the row (larger periods).
  Rows periodic(bool diagonal, int64_t period, int64_t width,
                const std::string &phase, const std::string &what) {
    if (width >= period) {
      leaf(MaskForm::All, what + ", width >= period");
      return one("~0ull");
    }
    bool narrow = period <= 62, wide = period > kn::kMaskSmall;
    leaf(MaskForm::Periodic, what + (wide ? ", 64-bit" : ""));
    std::string r = fresh("r");
    phases(r, diagonal ? "t.d" : "t.kb", phase, period, wide,
           diagonal ? kn::floorMod(-10, period) : -1);
    auto bits = [&](const std::string &rr) {
      if (narrow) {
        uint64_t pattern = periodPattern(period, width);
        return "periodicSmall(" + hex(pattern) + ", " + hex(pattern << 1) +
               ", " + std::to_string(period * (64 / period)) + ", " + rr + ")";
      }
      if (wide)
        return "periodicLarge64(" + rr + ", " + lit64(period) + ", " +
               lit64(width) + ")";
      if (width <= 64)
        return "periodicRun(" + hex(lowBits(width)) + ", " + rr + ", " +
               lit32(period) + ")";
      return "periodicWide(" + rr + ", " + lit32(period) + ", " +
             lit32(width) + ")";
    };
    if (diagonal)
      return two(bits(r + "_0"), bits(r + "_1"));
    return keys(bits(r + "_0"));
  }

  static uint64_t lowBits(int64_t width) {
    return width >= 64 ? ~uint64_t(0) : (uint64_t(1) << width) - 1;
  }

  static bool powerOfTwo(int64_t v) { return v > 0 && (v & (v - 1)) == 0; }

  /// Declares `r`_0 = (x - phase) mod period (x an i64 of the tile, phase
  /// an i64 expression) and, with step >= 0, `r`_1 = (`r`_0 + step) mod
  /// period: int, or i64 where `wide`. A power-of-two period takes the low
  /// bits of x - phase (exact for any x, and 32-bit below 2^32), others one
  /// 64-bit floor modulo.
  void phases(const std::string &r, const std::string &x,
              const std::string &phase, int64_t period, bool wide,
              int64_t step) {
    std::string type = wide ? "i64" : "int";
    std::string p = wide ? lit64(period) : lit32(period);
    if (powerOfTwo(period)) {
      std::string mask = wide ? hex(uint64_t(period - 1))
                              : std::to_string(period - 1) + "u";
      std::string cast = wide ? "(u64)" : "(u32)";
      code << "    const " << type << " " << r << "_0 = (" << type << ")("
           << cast << "(" << x << " - " << phase << ") & " << mask << ");\n";
      if (step >= 0)
        code << "    const " << type << " " << r << "_1 = (" << type << ")(("
             << cast << r << "_0 + " << (wide ? lit64(step) : lit32(step))
             << ") & " << mask << ");\n";
      return;
    }
    code << "    const " << type << " " << r << "_0 = " << (wide ? "" : "(int)")
         << "floorMod(" << x << " - " << phase << ", " << lit64(period)
         << ");\n";
    if (step >= 0)
      code << "    const " << type << " " << r
           << "_1 = " << (wide ? "stepMod64(" : "stepMod(") << r << "_0, "
           << (wide ? lit64(step) : lit32(step)) << ", " << p << ");\n";
  }

  /// Rows with (p - phase) mod period < width: all keys or none per row.
  Rows periodicRows(const RunExpr &e) {
    std::string what = setText("rows p", e);
    if (e.b >= e.a) {
      leaf(MaskForm::All, what + ", width >= period");
      return one("~0ull");
    }
    bool wide = e.a > kn::kMaskSmall;
    leaf(MaskForm::Row, what + (wide ? ", 64-bit" : ""));
    std::string r = fresh("r");
    phases(r, "t.p", lit64(e.c), e.a, wide, kn::floorMod(8, e.a));
    std::string w = wide ? lit64(e.b) : lit32(e.b);
    return two("rowAll(" + r + "_0 < " + w + ")",
               "rowAll(" + r + "_1 < " + w + ")");
  }

  Rows listed(const RunExpr &e) {
    std::string n = std::to_string(e.ranges.size());
    if (e.kind == RunExpr::ListedD && offsetTableFits(e.ranges))
      return offsetTable(e.ranges, n + " diagonal ranges");
    std::string arr =
        e.kind == RunExpr::ListedP && e.ranges.size() <= kInlineRowRanges
            ? ""
            : rangesArray(e.ranges);
    if (e.kind == RunExpr::ListedK) {
      leaf(MaskForm::Listed, n + " key ranges");
      return keys("listedBits(" + arr + ", " + n + ", t.kb)");
    }
    if (e.kind == RunExpr::ListedD) {
      leaf(MaskForm::Listed, n + " diagonal ranges");
      return two("listedBits(" + arr + ", " + n + ", t.d)",
                 "listedBits(" + arr + ", " + n + ", t.d - 10)");
    }
    leaf(MaskForm::Row, n + " row ranges");
    if (e.ranges.size() > kInlineRowRanges)
      return two("rowAll(inRanges(" + arr + ", " + n + ", t.p))",
                 "rowAll(inRanges(" + arr + ", " + n + ", t.p + 8))");
    // A short list: compares instead of a binary search.
    auto row = [&](const std::string &p) {
      std::string s;
      for (auto [lo, hi] : e.ranges)
        s += std::string(s.empty() ? "" : " || ") + "(" + p +
             " >= " + lit64(lo) + " && " + p + " < " + lit64(hi) + ")";
      return "rowAll(" + (s.empty() ? std::string("false") : s) + ")";
    };
    return two(row("t.p"), row("(t.p + 8)"));
  }

  /// Keys of shard (head + offset) mod shards of blocks of `block`: the
  /// periodic key set of period block * shards and phase shard * block, or
  /// (a period past 2^62, see shardKeys) the shard's one block.
  Rows shards(const RunExpr &e) {
    std::string what = "shards: block " + std::to_string(e.a) + ", shards " +
                       std::to_string(e.b) + ", offset " + std::to_string(e.c);
    int64_t period = kn::mulSat(e.a, e.b);
    std::string shard =
        "floorMod(head + " + lit64(e.c) + ", " + lit64(e.b) + ")";
    if (period >= kn::kUnbounded) {
      leaf(MaskForm::Interval, what + ", one block, 64-bit");
      std::string ph = fresh("ph");
      code << "    const i64 " << ph << " = mulSat(" << shard << ", "
           << lit64(e.a) << ");\n";
      return keys("bitRange(clampBit64(" + ph + " - t.kb), clampBit64(" + ph +
                 " + " + lit64(e.a) + " - t.kb))");
    }
    // The phase is below the period: the product is exact.
    return periodic(false, period, e.a, "(" + shard + " * " + lit64(e.a) + ")",
                    what);
  }

  /// Row p's group is the keys [p - m, p - m + size - 1], m = (p - s) mod
  /// size: bits from 8 h - d - m, one phase m per row.
  Rows groups(const RunExpr &e) {
    bool wide = e.a > kn::kMaskSmall;
    leaf(MaskForm::Interval, "shifted groups: size " + std::to_string(e.a) +
                                 ", shift " + std::to_string(e.b) +
                                 (wide ? ", 64-bit" : ""));
    std::string s =
        e.b == 0 ? "0LL" : "(head >= numHeads / 2 ? " + lit64(e.b) + " : 0LL)";
    std::string g = fresh("g");
    phases(g, "t.p", s, e.a, wide, kn::floorMod(8, e.a));
    auto row = [&](int h) {
      std::string lo = "(" + std::to_string(10 * h) + " - " +
                       (wide ? "t.d" : "t.dc") + " - " + g + "_" +
                       std::to_string(h) + ")";
      std::string end = lo + " + " + (wide ? lit64(e.a) : lit32(e.a));
      if (wide) {
        lo = "clampBit64(" + lo + ")";
        end = "clampBit64(" + end + ")";
      }
      return "bitRange(" + lo + ", " + end + ")";
    };
    return two(row(0), row(1));
  }

  using Ranges = std::vector<std::pair<int64_t, int64_t>>;

  /// Zero bits of the offset bitmap below the set and past it: a row (64
  /// bits, row 0 ten further than row 1) whose index is clamped to either
  /// end reads zeros only.
  static constexpr int64_t kOffsetPad = 80;
  /// The most entries (16 bytes each) of an offset table.
  static constexpr int64_t kMaxOffsetTable = 2048;

  /// Whether the offset set of half-open `ranges` (sorted or not, possibly
  /// empty ones) fits a table: its span and the indices' constants small.
  static bool offsetTableFits(const Ranges &ranges) {
    if (ranges.empty())
      return false;
    int64_t lo = ranges[0].first, hi = ranges[0].second;
    for (auto [a, b] : ranges) {
      if (!small(a) || !small(b))
        return false;
      lo = std::min(lo, a);
      hi = std::max(hi, b);
    }
    if (!small(lo - kOffsetPad - 10) || !small(hi + kOffsetPad))
      return false;
    return (hi - lo + kOffsetPad) / 16 + 1 <= kMaxOffsetTable;
  }

  /// The offset ranges of a union of intervals whose bounds are all
  /// row-relative (keys [p + a, p + b]: a band of diagonals each), where
  /// they fit a table; std::nullopt otherwise.
  std::optional<Ranges> offsetTableRanges(const RunExpr &e) const {
    if (!options.closedForms || e.kind != RunExpr::Union ||
        e.children.size() < 2)
      return std::nullopt;
    Ranges r;
    for (const RunExpr &c : e.children) {
      if (c.kind != RunExpr::Interval || c.lo.empty() || c.hi.empty())
        return std::nullopt;
      int64_t lo = c.lo[0].c, hi = c.hi[0].c;
      for (const Atom &a : c.lo) {
        if (a.var == Atom::Const)
          return std::nullopt;
        lo = std::max(lo, a.c);
      }
      for (const Atom &a : c.hi) {
        if (a.var == Atom::Const)
          return std::nullopt;
        hi = std::min(hi, a.c);
      }
      if (!small(lo) || !small(hi))
        return std::nullopt;
      if (lo <= hi)
        r.push_back({lo, hi + 1});
    }
    if (!offsetTableFits(r))
      return std::nullopt;
    return r;
  }

  /// The offset set `ranges` (half-open, fits offsetTableFits) as a bit
  /// table (Masks.cuh's OffsetEntry): bit i of its bitmap is offset i +
  /// base, base = min - kOffsetPad, so that row 1's index d - 10 - base
  /// clamped to [0, zmax] reads zeros wherever the rows meet no offset of
  /// the set (zmax = max - base, kOffsetPad zero bits past it).
  Rows offsetTable(const Ranges &ranges, const std::string &what) {
    int64_t lo = ranges[0].first, hi = ranges[0].second;
    for (auto [a, b] : ranges) {
      lo = std::min(lo, a);
      hi = std::max(hi, b);
    }
    const int64_t base = lo - kOffsetPad, zmax = hi - base;
    const int64_t entries = zmax / 16 + 1;
    std::vector<uint32_t> words(size_t(entries * 4), 0);
    auto bit = [&](int64_t i) {
      for (auto [a, b] : ranges)
        if (i + base >= a && i + base < b)
          return true;
      return false;
    };
    for (int64_t m = 0; m < entries; ++m)
      for (int64_t w = 0; w < 3; ++w)
        for (int64_t j = 0; j < 32; ++j)
          if (bit(16 * m + 32 * w + j))
            words[size_t(4 * m + w)] |= uint32_t(1) << j;
    std::string n = name + "_d" + std::to_string(arrays++);
    decls << "TESSERA_CONST OffsetEntry " << n << "[] = {";
    for (int64_t m = 0; m < entries; ++m) {
      decls << (m ? ", " : "") << "{{";
      for (int w = 0; w < 4; ++w)
        decls << (w ? ", " : "") << "0x" << std::hex
              << words[size_t(4 * m + w)] << std::dec << "u";
      decls << "}}";
    }
    decls << "};\n";
    leaf(MaskForm::Listed, what + ", offset table");
    std::string m = fresh("t");
    code << "    const RowMasks " << m << " = offsetTableRows(" << n
         << ", minInt(maxInt(t.dc - " << lit32(10 + base) << ", 0), "
         << zmax << "));\n";
    return {m + ".r0", m + ".r1"};
  }

  /// Listed blocks of blockQ x blockK. A list whose query blocks and keys
  /// span at most kMaxBlockTable entries of 64 keys: its tile table (each
  /// listed row's keys, 64 an entry of 16 bytes: blockTableBits). A
  /// longer one: its CSR list, searched per row (blockRowsBits).
  Rows blocks(const RunExpr &e) {
    std::string what = "blocks " + std::to_string(e.a) + " x " +
                       std::to_string(e.b) + ", " +
                       std::to_string(e.blocks.size()) + " listed";
    if (std::optional<Rows> r = blockTable(e, what))
      return *r;
    std::vector<kn::i64> data;
    int64_t rows = kn::appendBlockList(std::vector<std::pair<kn::i64, kn::i64>>(
                                           e.blocks.begin(), e.blocks.end()),
                                       data);
    std::string arr = array(std::vector<int64_t>(data.begin(), data.end()));
    leaf(MaskForm::Listed, what);
    std::string n = fresh("m");
    code << "    u64 " << n << "_0, " << n << "_1;\n"
         << "    blockRowsBits(" << arr << ", " << lit64(rows) << ", "
         << lit64(e.a) << ", " << lit64(e.b) << ", t, " << n << "_0, " << n
         << "_1);\n"
         << "    " << n << "_1 <<= 2;\n";
    return {n + "_0", n + "_1"};
  }

  std::optional<Rows> blockTable(const RunExpr &e, const std::string &what) {
    constexpr int64_t kMaxBlockTable = 8192;
    if (e.blocks.empty() || e.a <= 0 || e.b <= 0)
      return std::nullopt;
    int64_t qmin = e.blocks[0].first, qmax = qmin, kmax = 0;
    for (auto [qb, kb] : e.blocks) {
      if (qb < 0 || kb < 0)
        return std::nullopt;
      qmin = std::min(qmin, qb);
      qmax = std::max(qmax, qb);
      kmax = std::max(kmax, kb);
    }
    int64_t keyEnd = kn::mulSat(kmax + 1, e.b);
    if (keyEnd >= kn::kUnbounded || kn::mulSat(qmax + 1, e.a) >= kn::kUnbounded)
      return std::nullopt;
    int64_t rows = qmax - qmin + 1, tiles = (keyEnd + 63) / 64;
    if (rows > kMaxBlockTable || tiles > kMaxBlockTable / rows)
      return std::nullopt;
    std::vector<uint64_t> table(size_t(rows * tiles), 0);
    for (auto [qb, kb] : e.blocks)
      for (int64_t k = kb * e.b; k < (kb + 1) * e.b; ++k)
        table[size_t((qb - qmin) * tiles + k / 64)] |= uint64_t(1) << (k % 64);
    // blockTableBits' entries (Masks.cuh): the keys shifted up by 8 in 96 bits.
    std::string n = name + "_d" + std::to_string(arrays++);
    decls << "TESSERA_CONST OffsetEntry " << n << "[] = {";
    for (size_t i = 0; i < table.size(); ++i) {
      const uint64_t k = table[i];
      decls << (i ? ", " : "") << "{{0x" << std::hex << uint32_t(k << 8)
            << "u, 0x" << uint32_t(k >> 24) << "u, 0x" << uint32_t(k >> 56)
            << "u, 0x0u}}" << std::dec;
    }
    decls << "};\n";
    leaf(MaskForm::Listed, what + ", tile table");
    // The row's query block, less the first listed one.
    auto row = [&](const std::string &p, const std::string &sh) {
      std::string qb = powerOfTwo(e.a) ? "(" + p + " >> " +
                                             std::to_string(log2(e.a)) + ")"
                                       : "floorDiv(" + p + ", " + lit64(e.a) +
                                             ")";
      return "blockTableBits(" + n + ", " + lit64(rows) + ", " +
             lit64(tiles) + ", " + qb + " - " + lit64(qmin) + ", t.tile, " +
             sh + ", t.off)";
    };
    return two(row("t.p", "t.sh"), row("(t.p + 8)", "(t.sh - 2)"));
  }

  static int log2(int64_t v) {
    int n = 0;
    while ((int64_t(1) << n) < v)
      ++n;
    return n;
  }

  //===--------------------------------------------------------------------===//
  // The generic form
  //===--------------------------------------------------------------------===//

  /// The leaf's element predicate over (p, k).
  std::string leafPredicate(const RunExpr &e) {
    auto atom = [](const Atom &a) {
      return a.var == Atom::Const ? lit64(a.c) : "(p + " + lit64(a.c) + ")";
    };
    auto inPeriodic = [](const std::string &x, const RunExpr &e) {
      if (e.b >= e.a)
        return std::string("true");
      return "(floorMod(" + x + " - " + lit64(e.c) + ", " + lit64(e.a) +
             ") < " + lit64(e.b) + ")";
    };
    switch (e.kind) {
    case RunExpr::Interval: {
      std::string s;
      for (const Atom &a : e.lo)
        s += std::string(s.empty() ? "" : " && ") + "k >= " + atom(a);
      for (const Atom &a : e.hi)
        s += std::string(s.empty() ? "" : " && ") + "k <= " + atom(a);
      return s.empty() ? "true" : "(" + s + ")";
    }
    case RunExpr::PeriodicK:
      return inPeriodic("k", e);
    case RunExpr::PeriodicD:
      return inPeriodic("(k - p)", e);
    case RunExpr::PeriodicP:
      return inPeriodic("p", e);
    case RunExpr::ListedK:
    case RunExpr::ListedD:
    case RunExpr::ListedP:
      return "inRanges(" + rangesArray(e.ranges) + ", " +
             std::to_string(e.ranges.size()) + ", " +
             (e.kind == RunExpr::ListedK   ? "k"
              : e.kind == RunExpr::ListedD ? "(k - p)"
                                           : "p") +
             ")";
    case RunExpr::Shards:
      return "(floorMod(k / " + lit64(e.a) + ", " + lit64(e.b) +
             ") == floorMod(head + " + lit64(e.c) + ", " + lit64(e.b) + "))";
    case RunExpr::Groups: {
      std::string s = "(head >= numHeads / 2 ? " + lit64(e.b) + " : 0LL)";
      return "(floorDiv(p - " + s + ", " + lit64(e.a) + ") == floorDiv(k - " +
             s + ", " + lit64(e.a) + "))";
    }
    case RunExpr::Blocks: {
      std::vector<kn::i64> data;
      int64_t rows =
          kn::appendBlockList(std::vector<std::pair<kn::i64, kn::i64>>(
                                  e.blocks.begin(), e.blocks.end()),
                              data);
      return "blockListed(" +
             array(std::vector<int64_t>(data.begin(), data.end())) + ", " +
             lit64(rows) + ", floorDiv(p, " + lit64(e.a) + "), k / " +
             lit64(e.b) + ")";
    }
    default:
      return "false";
    }
  }

  Rows predicate(const RunExpr &e) {
    leaf(MaskForm::Predicate, "element predicate");
    std::string f = fresh("f");
    code << "    auto " << f << " = [&](i64 p, i64 k) -> bool { return "
         << leafPredicate(e) << "; };\n";
    return two("predicateBits(" + f + ", t.p, t.kb, 1)",
               "predicateBits(" + f + ", t.p + 8, t.kb - 2, 3)");
  }

  //===--------------------------------------------------------------------===//
  // Combinators
  //===--------------------------------------------------------------------===//

  Rows combinator(const RunExpr &e) {
    std::vector<Rows> parts;
    for (const RunExpr &c : e.children)
      parts.push_back(node(c));
    bool perRow = false;
    for (const Rows &r : parts)
      perRow |= r.r0 != r.r1;
    auto join = [&](bool second) {
      if (parts.empty())
        return std::string(e.kind == RunExpr::Union ? "0ull" : "~0ull");
      const char *op = e.kind == RunExpr::Union       ? " | "
                       : e.kind == RunExpr::Intersect ? " & "
                                                      : " & ~";
      std::string s;
      for (size_t i = 0; i < parts.size(); ++i)
        s += (i ? op : "") + (second ? parts[i].r1 : parts[i].r0);
      return s;
    };
    code << "    // "
         << (e.kind == RunExpr::Union       ? "union"
             : e.kind == RunExpr::Intersect ? "intersection"
                                            : "difference")
         << "\n";
    return perRow ? two(join(false), join(true)) : one(join(false));
  }

  int arrays = 0, vars = 0;
};

} // namespace

std::vector<MaskForm> tessera::schedule::maskForms(const RunExpr &runs,
                                                   const MaskOptions &options) {
  MaskEmitter em("M", options);
  em.node(runs);
  return em.forms;
}

std::string tessera::schedule::emitMaskCode(const RunExpr &runs,
                                            const std::string &name,
                                            const MaskOptions &options) {
  MaskEmitter em(name, options);
  Rows root = em.node(runs);
  std::ostringstream os;
  // rows: every key (the kernels apply Nk's edge to their last key tile
  // only); keep: the keys below Nk.
  os << em.decls.str() << "struct " << name << " {\n"
     << "  static TESSERA_HD RowMasks rows(const MaskTile &t, i64 head, "
        "i64 numHeads) {\n"
     << "    (void)t;\n    (void)head;\n    (void)numHeads;\n"
     << em.code.str() << "    return {" << root.r0 << ", " << root.r1
     << "};\n  }\n"
     << "  static TESSERA_HD u32 keep(i64 rowPos, i64 k0, int c2, i64 nk, "
        "i64 head, i64 numHeads) {\n"
     << "    const MaskTile t = maskTile(rowPos, k0, c2, nk);\n"
     << "    return keepBits(rows(t, head, numHeads), t);\n  }\n};\n";
  return os.str();
}
