//===- Runs.cpp - run expressions and the generated code of head groups ---===//

#include "tessera/Schedule/Runs.h"
#include "tessera/Semantics/Ranges.h"
#include "tessera/kernel/OwnedTable.h"

#include <algorithm>
#include <map>
#include <optional>
#include <sstream>

using namespace tessera;
using namespace tessera::schedule;
namespace s = tessera::semantics;

bool RunExpr::operator==(const RunExpr &o) const {
  return kind == o.kind && lo == o.lo && hi == o.hi && flo == o.flo &&
         fhi == o.fhi && a == o.a && b == o.b && c == o.c &&
         ranges == o.ranges && blocks == o.blocks && children == o.children;
}

namespace {

RunExpr make(RunExpr::Kind kind, int64_t a = 0, int64_t b = 0,
             int64_t c = 0) {
  RunExpr e;
  e.kind = kind;
  e.a = a;
  e.b = b;
  e.c = c;
  return e;
}

RunExpr interval(Bound lo, Bound hi, Bound flo, Bound fhi) {
  RunExpr e = make(RunExpr::Interval);
  e.lo = std::move(lo);
  e.hi = std::move(hi);
  e.flo = std::move(flo);
  e.fhi = std::move(fhi);
  return e;
}

Atom atom(int64_t var, int64_t c) { return Atom{var, c}; }

/// Offsets d in [a, b]: keys [p0 + a, p1 + b], all rows [p1 + a, p0 + b].
RunExpr bandD(int64_t a, int64_t b) {
  return interval({atom(Atom::P0, a)}, {atom(Atom::P1, b)},
                  {atom(Atom::P1, a)}, {atom(Atom::P0, b)});
}

RunExpr bandK(int64_t lo, int64_t hi) {
  return interval({atom(Atom::Const, lo)}, {atom(Atom::Const, hi)},
                  {atom(Atom::Const, lo)}, {atom(Atom::Const, hi)});
}

RunExpr combine(RunExpr::Kind kind, std::vector<RunExpr> children) {
  RunExpr e = make(kind);
  e.children = std::move(children);
  return e;
}

/// Lists of at most this many ranges become unions of intervals (inline
/// code); longer ones are listed leaves with a lookup.
constexpr size_t kInlineRanges = 4;

struct Builder {
  RunExpr build(const s::Pattern &p) {
    return std::visit([&](const auto &n) { return node(n); }, p.node);
  }
  std::vector<RunExpr> build(const std::vector<s::Pattern> &ps) {
    std::vector<RunExpr> out;
    for (const s::Pattern &p : ps)
      out.push_back(build(p));
    return out;
  }

  RunExpr node(const s::Dense &) { return make(RunExpr::All); }
  RunExpr node(const s::Skip &) { return make(RunExpr::None); }
  RunExpr node(const s::Causal &) {
    return interval({}, {atom(Atom::P1, 0)}, {}, {atom(Atom::P0, 0)});
  }
  RunExpr node(const s::Window &w) { return bandD(-w.before, w.after); }
  RunExpr node(const s::Sink &p) {
    return interval({}, {atom(Atom::Const, p.count - 1), atom(Atom::P1, 0)},
                    {}, {atom(Atom::Const, p.count - 1), atom(Atom::P0, 0)});
  }
  RunExpr node(const s::AShape &p) {
    return combine(RunExpr::Union,
                   {node(s::Sink{p.sink}), bandD(-p.before, p.after)});
  }
  RunExpr node(const s::MultiDiagonal &m) {
    if (m.stride > 0) {
      if (2 * m.width + 1 >= m.stride)
        return make(RunExpr::All);
      return make(RunExpr::PeriodicD, m.stride, 2 * m.width + 1, -m.width);
    }
    std::vector<s::Range> bands;
    for (int64_t o : m.offsets)
      bands.push_back({o - m.width, o + m.width + 1});
    return listed(RunExpr::ListedD, s::mergeRanges(bands));
  }
  RunExpr node(const s::VerticalStripe &v) {
    if (v.keys.period > 0)
      return make(RunExpr::PeriodicK, v.keys.period, v.keys.width,
                  v.keys.phase);
    return listed(RunExpr::ListedK, s::mergeRanges(v.keys.ranges));
  }
  RunExpr node(const s::HorizontalStripe &h) {
    if (h.queries.period > 0)
      return make(RunExpr::PeriodicP, h.queries.period, h.queries.width,
                  h.queries.phase);
    RunExpr e = make(RunExpr::ListedP);
    e.ranges = s::mergeRanges(h.queries.ranges);
    return e;
  }
  RunExpr node(const s::Grid &g) {
    std::vector<RunExpr> parts;
    if (g.verticalWidth > 0)
      parts.push_back(
          make(RunExpr::PeriodicK, g.stride, g.verticalWidth, g.phase));
    // (-d - phase) mod stride < width <=> (d - (1 - width - phase)) mod
    // stride < width.
    if (g.slashWidth > 0)
      parts.push_back(make(RunExpr::PeriodicD, g.stride, g.slashWidth,
                           1 - g.slashWidth - g.phase));
    return combine(RunExpr::Union, std::move(parts));
  }
  RunExpr node(const s::StridedShards &p) {
    return make(RunExpr::Shards, p.block, p.shards, p.offset);
  }
  RunExpr node(const s::ShiftedGroups &g) {
    return make(RunExpr::Groups, g.size, g.shift);
  }
  RunExpr node(const s::BlockSparse &b) {
    RunExpr e = make(RunExpr::Blocks, b.blockQ, b.blockK);
    e.blocks = b.blocks;
    std::sort(e.blocks.begin(), e.blocks.end());
    e.blocks.erase(std::unique(e.blocks.begin(), e.blocks.end()),
                   e.blocks.end());
    return e;
  }
  RunExpr node(const s::Union &u) {
    return combine(RunExpr::Union, build(u.parts));
  }
  RunExpr node(const s::Intersect &i) {
    return combine(RunExpr::Intersect, build(i.parts));
  }
  RunExpr node(const s::Difference &d) {
    return combine(RunExpr::Difference, build(d.parts));
  }

  /// Short key or offset lists: one interval per range.
  RunExpr listed(RunExpr::Kind kind, std::vector<s::Range> ranges) {
    if (ranges.size() <= kInlineRanges) {
      std::vector<RunExpr> parts;
      for (auto [lo, hi] : ranges)
        parts.push_back(kind == RunExpr::ListedK ? bandK(lo, hi - 1)
                                                 : bandD(lo, hi - 1));
      return combine(RunExpr::Union, std::move(parts));
    }
    RunExpr e = make(kind);
    e.ranges = std::move(ranges);
    return e;
  }
};

void normalize(Bound &b, bool upper) {
  std::map<int64_t, int64_t> best; // var -> tightest constant
  for (const Atom &x : b) {
    auto [it, fresh] = best.insert({x.var, x.c});
    if (!fresh)
      it->second = upper ? std::min(it->second, x.c) : std::max(it->second, x.c);
  }
  b.clear();
  for (auto [var, c] : best) {
    if (!upper && var == Atom::Const && c <= 0)
      continue; // keys are clipped at 0 anyway
    b.push_back(Atom{var, c});
  }
}

std::string lit(int64_t v) {
  std::string s = std::to_string(v) + "LL";
  return v < 0 ? "(" + s + ")" : s;
}

std::string atomCode(const Atom &a) {
  if (a.var == Atom::Const)
    return lit(a.c);
  std::string v = a.var == Atom::P0 ? "ctx.p0" : "ctx.p1";
  if (a.c == 0)
    return v;
  return "(" + v + (a.c < 0 ? " - " : " + ") +
         std::to_string(a.c < 0 ? -a.c : a.c) + "LL)";
}

std::string boundCode(const Bound &b, bool upper) {
  if (b.empty())
    return upper ? "kUnbounded" : "0LL";
  std::string s = atomCode(b[0]);
  for (size_t i = 1; i < b.size(); ++i)
    s = std::string(upper ? "minI(" : "maxI(") + s + ", " + atomCode(b[i]) +
        ")";
  return s;
}

class Emitter {
public:
  explicit Emitter(const std::string &name) : name(name) {}

  /// A data array of the group; returns its name.
  std::string array(const std::vector<int64_t> &values) {
    std::string n = name + "_d" + std::to_string(arrays++);
    decls << "TESSERA_CONST i64 " << n << "[] = {";
    for (size_t i = 0; i < values.size(); ++i)
      decls << (i ? ", " : "") << lit(values[i]);
    if (values.empty())
      decls << "0";
    decls << "};\n";
    return n;
  }

  std::string rangesArray(const std::vector<s::Range> &ranges) {
    std::vector<int64_t> flat;
    for (auto [lo, hi] : ranges) {
      flat.push_back(lo);
      flat.push_back(hi);
    }
    return array(flat);
  }

  /// The element predicate as one expression over p, k, d, head, numHeads.
  std::string pred(const s::Pattern &p) {
    return std::visit([&](const auto &n) { return pred(n); }, p.node);
  }
  std::string pred(const s::Dense &) { return "true"; }
  std::string pred(const s::Skip &) { return "false"; }
  std::string pred(const s::Causal &) { return "(d <= 0)"; }
  std::string pred(const s::Window &w) {
    return "(d >= " + lit(-w.before) + " && d <= " + lit(w.after) + ")";
  }
  std::string pred(const s::Sink &p) {
    return "(k < " + lit(p.count) + " && d <= 0)";
  }
  std::string pred(const s::AShape &p) {
    return "(" + pred(s::Sink{p.sink}) + " || " +
           pred(s::Window{p.before, p.after}) + ")";
  }
  std::string inRanges(const std::string &x,
                       const std::vector<s::Range> &ranges) {
    if (ranges.empty())
      return "false";
    if (ranges.size() > kInlineRanges)
      return "inRanges(" + rangesArray(ranges) + ", " +
             std::to_string(ranges.size()) + ", " + x + ")";
    std::string s;
    for (auto [lo, hi] : ranges)
      s += std::string(s.empty() ? "(" : " || ") + "(" + x + " >= " + lit(lo) +
           " && " + x + " < " + lit(hi) + ")";
    return s + ")";
  }
  std::string inPeriodic(const std::string &x, int64_t period, int64_t width,
                         int64_t phase) {
    if (width >= period)
      return "true";
    return "(floorMod(" + x + " - " + lit(phase) + ", " + lit(period) +
           ") < " + lit(width) + ")";
  }
  std::string inSet(const std::string &x, const s::IndexSet &set) {
    if (set.period > 0)
      return inPeriodic(x, set.period, set.width, set.phase);
    return inRanges(x, s::mergeRanges(set.ranges));
  }
  std::string pred(const s::MultiDiagonal &m) {
    if (m.stride > 0)
      return inPeriodic("d", m.stride, 2 * m.width + 1, -m.width);
    std::vector<s::Range> bands;
    for (int64_t o : m.offsets)
      bands.push_back({o - m.width, o + m.width + 1});
    return inRanges("d", s::mergeRanges(bands));
  }
  std::string pred(const s::VerticalStripe &v) { return inSet("k", v.keys); }
  std::string pred(const s::HorizontalStripe &h) {
    return inSet("p", h.queries);
  }
  std::string pred(const s::Grid &g) {
    std::string v = g.verticalWidth > 0
                        ? inPeriodic("k", g.stride, g.verticalWidth, g.phase)
                        : "false";
    std::string sl = g.slashWidth > 0
                         ? inPeriodic("(-d)", g.stride, g.slashWidth, g.phase)
                         : "false";
    return "(" + v + " || " + sl + ")";
  }
  std::string pred(const s::StridedShards &p) {
    return "(floorMod(k / " + lit(p.block) + ", " + lit(p.shards) +
           ") == floorMod(head + " + lit(p.offset) + ", " + lit(p.shards) +
           "))";
  }
  std::string pred(const s::ShiftedGroups &g) {
    std::string sh = "(head >= numHeads / 2 ? " + lit(g.shift) + " : 0LL)";
    return "(floorDiv(p - " + sh + ", " + lit(g.size) + ") == floorDiv(k - " +
           sh + ", " + lit(g.size) + "))";
  }
  std::string pred(const s::BlockSparse &b) {
    auto [rowsName, rows] = csr(b.blocks);
    return "blockListed(" + rowsName + ", " + lit(rows) + ", floorDiv(p, " +
           lit(b.blockQ) + "), k / " + lit(b.blockK) + ")";
  }
  std::string joined(const std::vector<s::Pattern> &parts, const char *op) {
    std::string s = "(";
    for (size_t i = 0; i < parts.size(); ++i)
      s += (i ? op : "") + pred(parts[i]);
    return s + ")";
  }
  std::string pred(const s::Union &u) { return joined(u.parts, " || "); }
  std::string pred(const s::Intersect &i) { return joined(i.parts, " && "); }
  std::string pred(const s::Difference &d) {
    return "(" + pred(d.parts[0]) + " && !" + pred(d.parts[1]) + ")";
  }

  /// The kBlocks data of listed (query block, key block) pairs: the array's
  /// name and the number of listed rows.
  std::pair<std::string, int64_t>
  csr(const std::vector<std::pair<int64_t, int64_t>> &blocks) {
    std::vector<kernel::i64> data;
    int64_t rows = kernel::appendBlockList(
        std::vector<std::pair<kernel::i64, kernel::i64>>(blocks.begin(),
                                                         blocks.end()),
        data);
    return {array(std::vector<int64_t>(data.begin(), data.end())), rows};
  }

  /// Emits the lambdas of a run expression; returns the root's name.
  std::string runs(const RunExpr &e) {
    std::string body;
    switch (e.kind) {
    case RunExpr::All:
      body = "allRun(ctx, x, kFull)";
      break;
    case RunExpr::None:
      body = "noRun()";
      break;
    case RunExpr::Interval:
      body = "intervalRun(ctx, x, " + boundCode(e.lo, false) + ", " +
             boundCode(e.hi, true) + ", " + boundCode(e.flo, false) + ", " +
             boundCode(e.fhi, true) + ")";
      break;
    case RunExpr::PeriodicK:
    case RunExpr::PeriodicD:
    case RunExpr::PeriodicP:
      body = std::string(e.kind == RunExpr::PeriodicK   ? "periodicKRun"
                         : e.kind == RunExpr::PeriodicD ? "periodicDRun"
                                                        : "periodicPRun") +
             "(ctx, x, " + lit(e.a) + ", " + lit(e.b) + ", " + lit(e.c) + ")";
      break;
    case RunExpr::ListedK:
    case RunExpr::ListedD:
    case RunExpr::ListedP:
      body = std::string(e.kind == RunExpr::ListedK   ? "intervalsKRun"
                         : e.kind == RunExpr::ListedD ? "intervalsDRun"
                                                      : "intervalsPRun") +
             "(ctx, x, " + rangesArray(e.ranges) + ", " +
             std::to_string(e.ranges.size()) + ")";
      break;
    case RunExpr::Shards:
      body = "shardsRun(ctx, x, " + lit(e.a) + ", " + lit(e.b) + ", " +
             lit(e.c) + ")";
      break;
    case RunExpr::Groups:
      body = "groupsRun(ctx, x, " + lit(e.a) + ", " + lit(e.b) + ")";
      break;
    case RunExpr::Positions: // transposed runs only: never emitted here
      body = "allRun(ctx, x, kPartial)";
      break;
    case RunExpr::Blocks: {
      auto [rowsName, rows] = csr(e.blocks);
      body = "blocksRun(ctx, x, " + lit(e.a) + ", " + lit(e.b) + ", " +
             lit(rows) + ", " + rowsName + ")";
      break;
    }
    case RunExpr::Union: {
      std::vector<std::string> names;
      for (const RunExpr &c : e.children)
        names.push_back(runs(c));
      body = names.empty() ? "noRun()" : names[0] + "(x)";
      for (size_t i = 1; i < names.size(); ++i)
        body = "unionOf(" + body + ", " + names[i] + "(x))";
      break;
    }
    case RunExpr::Intersect:
    case RunExpr::Difference: {
      std::vector<std::string> names;
      for (const RunExpr &c : e.children)
        names.push_back(runs(c));
      if (names.empty()) {
        body = "allRun(ctx, x, kFull)";
        break;
      }
      const char *fn = e.kind == RunExpr::Intersect ? "intersectRuns"
                                                    : "differenceRuns";
      std::string acc = names[0];
      for (size_t i = 1; i + 1 < names.size(); ++i) {
        std::string n = "r" + std::to_string(lambdas++);
        code << "    auto " << n << " = [&](i64 x) -> Run { return " << fn
             << "(" << acc << ", " << names[i] << ", x); };\n";
        acc = n;
      }
      body = names.size() == 1 ? acc + "(x)"
                               : std::string(fn) + "(" + acc + ", " +
                                     names.back() + ", x)";
      break;
    }
    }
    std::string n = "r" + std::to_string(lambdas++);
    code << "    auto " << n << " = [&](i64 x) -> Run { return " << body
         << "; };\n";
    return n;
  }

  std::string name;
  std::ostringstream decls, code;
  int arrays = 0, lambdas = 0;
};

} // namespace

void tessera::schedule::normalizeBounds(RunExpr &e) {
  for (RunExpr &c : e.children)
    normalizeBounds(c);
  if (e.kind == RunExpr::Positions)
    return; // positions are not clipped at 0
  normalize(e.lo, false);
  normalize(e.hi, true);
  normalize(e.flo, false);
  normalize(e.fhi, true);
}

/// The children of a union or intersection `e`, with those of the same kind
/// spliced in (moved out of `e`); simplifyRuns and simplifyTransposed share
/// it.
static std::vector<RunExpr> flattenChildren(RunExpr &e) {
  std::vector<RunExpr> flat;
  for (RunExpr &c : e.children) {
    if (c.kind == e.kind)
      for (RunExpr &g : c.children)
        flat.push_back(std::move(g));
    else
      flat.push_back(std::move(c));
  }
  return flat;
}

void tessera::schedule::simplifyRuns(RunExpr &e) {
  for (RunExpr &c : e.children)
    simplifyRuns(c);
  if (e.kind == RunExpr::Union || e.kind == RunExpr::Intersect) {
    bool isUnion = e.kind == RunExpr::Union;
    RunExpr::Kind neutral = isUnion ? RunExpr::None : RunExpr::All;
    RunExpr::Kind absorbing = isUnion ? RunExpr::All : RunExpr::None;
    std::vector<RunExpr> flat = flattenChildren(e);
    std::vector<RunExpr> kept;
    RunExpr merged = make(RunExpr::Interval);
    bool haveInterval = false;
    for (RunExpr &c : flat) {
      if (c.kind == absorbing) {
        e = make(absorbing);
        return;
      }
      if (c.kind == neutral)
        continue;
      if (!isUnion && c.kind == RunExpr::Interval) {
        // Keys some row of the block sees in both, and keys every row sees
        // in both: the bounds' maxima and minima.
        for (auto [dst, src] : {std::pair{&merged.lo, &c.lo},
                                {&merged.hi, &c.hi},
                                {&merged.flo, &c.flo},
                                {&merged.fhi, &c.fhi}})
          dst->insert(dst->end(), src->begin(), src->end());
        haveInterval = true;
        continue;
      }
      kept.push_back(std::move(c));
    }
    if (haveInterval) {
      normalizeBounds(merged);
      kept.insert(kept.begin(), std::move(merged));
    }
    if (kept.empty())
      e = make(neutral);
    else if (kept.size() == 1)
      e = std::move(kept[0]);
    else
      e.children = std::move(kept);
    return;
  }
  if (e.kind == RunExpr::Difference) {
    if (e.children[0].kind == RunExpr::None ||
        e.children[1].kind == RunExpr::All)
      e = make(RunExpr::None);
    else if (e.children[1].kind == RunExpr::None)
      e = std::move(e.children[0]);
    return;
  }
  if (e.kind == RunExpr::Interval)
    normalizeBounds(e);
}

RunExpr tessera::schedule::buildRuns(const s::Pattern &pattern) {
  RunExpr e = Builder().build(pattern);
  simplifyRuns(e);
  return e;
}

std::string tessera::schedule::emitGroupCode(const s::Pattern &pattern,
                                             const RunExpr &runs,
                                             const std::string &name) {
  Emitter em(name);
  std::string predicate = em.pred(pattern);
  std::string root = em.runs(runs);
  std::ostringstream os;
  os << em.decls.str() << "struct " << name << " {\n"
     << "  static TESSERA_HD bool allowed(i64 p, i64 k, i64 head, "
        "i64 numHeads) {\n"
     << "    const i64 d = k - p;\n"
     << "    (void)d;\n    (void)head;\n    (void)numHeads;\n"
     << "    return " << predicate << ";\n  }\n"
     << "  static TESSERA_HD Run runFrom(const RunCtx &ctx, i64 kb) {\n"
     << em.code.str() << "    return " << root << "(kb);\n  }\n};\n";
  return os.str();
}

std::string tessera::schedule::printBound(const Bound &b, bool upper) {
  auto one = [](const Atom &a) {
    if (a.var == Atom::Const)
      return std::to_string(a.c);
    static const char *names[] = {"", "p0", "p1", "k0", "k1"};
    std::string v = names[a.var];
    if (a.c == 0)
      return v;
    return v + (a.c < 0 ? " - " : " + ") + std::to_string(a.c < 0 ? -a.c : a.c);
  };
  if (b.empty())
    return upper ? "end" : "0";
  if (b.size() == 1)
    return one(b[0]);
  std::string s = upper ? "min(" : "max(";
  for (size_t i = 0; i < b.size(); ++i)
    s += (i ? ", " : "") + one(b[i]);
  return s + ")";
}

namespace {

/// The tightest atom per variable (a maximum for lower bounds, a minimum
/// for upper ones), constants included: positions have no implied clip.
void tightenPositions(Bound &b, bool upper) {
  std::map<int64_t, int64_t> best;
  for (const Atom &x : b) {
    auto [it, fresh] = best.insert({x.var, x.c});
    if (!fresh)
      it->second = upper ? std::min(it->second, x.c) : std::max(it->second, x.c);
  }
  b.clear();
  for (auto [var, c] : best)
    b.push_back(Atom{var, c});
}

/// An Interval's constraints, transposed. Its constant atoms bound the keys
/// (k >= c, k <= c); its p atoms bound the offset d = k - p (keys from
/// p + c: d >= c; keys up to p + c: d <= c). With d in [a, b] and keys in
/// [cLo, cHi] the block's keys that count are [max(k0, cLo), min(k1, cHi)],
/// seen by the positions [max(k0, cLo) - b, min(k1, cHi) - a], all of
/// them (when the block lies in the key range) by [k1 - b, k0 - a]: the
/// query blocks the forward's interval visits, FULL where it says FULL.
RunExpr transposeInterval(const RunExpr &e) {
  std::optional<int64_t> keyLo, keyHi, a, b;
  auto tighter = [](std::optional<int64_t> &v, int64_t x, bool upper) {
    v = !v ? x : upper ? std::min(*v, x) : std::max(*v, x);
  };
  for (const Atom &x : e.lo)
    tighter(x.var == Atom::Const ? keyLo : a, x.c, false);
  for (const Atom &x : e.hi)
    tighter(x.var == Atom::Const ? keyHi : b, x.c, true);
  // Contradictory offsets allow no pair (the forward's interval may still
  // visit blocks, every one of them empty).
  if ((a && b && *a > *b) || (keyLo && keyHi && *keyLo > *keyHi))
    return make(RunExpr::None);
  RunExpr pos = make(RunExpr::Positions);
  if (b) { // p >= k - b
    pos.lo.push_back(atom(Atom::K0, -*b));
    if (keyLo && *keyLo > 0)
      pos.lo.push_back(atom(Atom::Const, *keyLo - *b));
    pos.flo.push_back(atom(Atom::K1, -*b));
  }
  if (a) { // p <= k - a
    pos.hi.push_back(atom(Atom::K1, -*a));
    if (keyHi)
      pos.hi.push_back(atom(Atom::Const, *keyHi - *a));
    pos.fhi.push_back(atom(Atom::K0, -*a));
  }
  for (auto [bound, upper] : {std::pair{&pos.lo, false}, {&pos.hi, true},
                              {&pos.flo, false}, {&pos.fhi, true}})
    tightenPositions(*bound, upper);
  bool keyBound = keyHi || (keyLo && *keyLo > 0);
  RunExpr keys = make(RunExpr::ListedK);
  keys.ranges = {{keyLo ? std::max<int64_t>(*keyLo, 0) : 0,
                  keyHi ? *keyHi + 1 : kernel::kUnbounded}};
  bool posBound = a || b;
  if (keyBound && posBound)
    return combine(RunExpr::Intersect, {std::move(keys), std::move(pos)});
  if (keyBound)
    return keys;
  if (posBound)
    return pos;
  return make(RunExpr::All);
}

/// Flattens nested unions and intersections, merges the positions of an
/// intersection into one (intervals: the bounds' maxima and minima).
void simplifyTransposed(RunExpr &e) {
  for (RunExpr &c : e.children)
    simplifyTransposed(c);
  if (e.kind != RunExpr::Union && e.kind != RunExpr::Intersect)
    return;
  std::vector<RunExpr> flat = flattenChildren(e);
  std::vector<RunExpr> kept;
  int merged = -1;
  for (RunExpr &c : flat) {
    if (e.kind == RunExpr::Intersect && c.kind == RunExpr::Positions &&
        merged >= 0) {
      RunExpr &m = kept[merged];
      for (auto [dst, src] : {std::pair{&m.lo, &c.lo}, {&m.hi, &c.hi},
                              {&m.flo, &c.flo}, {&m.fhi, &c.fhi}})
        dst->insert(dst->end(), src->begin(), src->end());
      for (auto [b, upper] : {std::pair{&m.lo, false}, {&m.hi, true},
                              {&m.flo, false}, {&m.fhi, true}})
        tightenPositions(*b, upper);
      continue;
    }
    if (e.kind == RunExpr::Intersect && c.kind == RunExpr::Positions)
      merged = static_cast<int>(kept.size());
    kept.push_back(std::move(c));
  }
  if (kept.size() == 1)
    e = std::move(kept[0]);
  else
    e.children = std::move(kept);
}

RunExpr transposeNode(const RunExpr &e) {
  switch (e.kind) {
  case RunExpr::Interval:
    return transposeInterval(e);
  case RunExpr::Blocks: {
    RunExpr t = e;
    for (auto &[qb, kb] : t.blocks)
      std::swap(qb, kb);
    std::sort(t.blocks.begin(), t.blocks.end());
    return t;
  }
  case RunExpr::Union:
  case RunExpr::Intersect:
  case RunExpr::Difference: {
    RunExpr t = make(e.kind);
    for (const RunExpr &c : e.children)
      t.children.push_back(transposeNode(c));
    return t;
  }
  default:
    return e; // the same set, walked the transposed way
  }
}

} // namespace

RunExpr tessera::schedule::transposeRuns(const RunExpr &forward) {
  RunExpr t = transposeNode(forward);
  simplifyTransposed(t);
  return t;
}
