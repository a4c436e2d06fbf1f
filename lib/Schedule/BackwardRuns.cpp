//===- BackwardRuns.cpp - generated code of the transposed runs -----------===//

#include "tessera/Schedule/BackwardRuns.h"
#include "tessera/kernel/OwnedTable.h"

#include <sstream>

using namespace tessera;
using namespace tessera::schedule;

namespace {

std::string lit(int64_t v) {
  std::string s = std::to_string(v) + "LL";
  return v < 0 ? "(" + s + ")" : s;
}

/// c, ctx.k0 + c or ctx.k1 + c (the atoms of Positions bounds).
std::string atomCode(const Atom &a) {
  if (a.var == Atom::Const)
    return lit(a.c);
  std::string v = a.var == Atom::K0 ? "ctx.k0" : "ctx.k1";
  if (a.c == 0)
    return v;
  return "(" + v + (a.c < 0 ? " - " : " + ") +
         std::to_string(a.c < 0 ? -a.c : a.c) + "LL)";
}

/// A Positions bound: the maximum (lower) or minimum (upper) of its atoms;
/// empty, unbounded (positionRunT clips positions to the queries).
std::string boundCode(const Bound &b, bool upper) {
  if (b.empty())
    return upper ? "kUnbounded" : "(-kUnbounded)";
  std::string s = atomCode(b[0]);
  for (size_t i = 1; i < b.size(); ++i)
    s = std::string(upper ? "minI(" : "maxI(") + s + ", " + atomCode(b[i]) +
        ")";
  return s;
}

class TransposedEmitter {
public:
  explicit TransposedEmitter(const std::string &name) : name(name) {}

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

  std::string ranges(const std::vector<std::pair<int64_t, int64_t>> &r) {
    std::vector<int64_t> flat;
    for (auto [lo, hi] : r) {
      flat.push_back(lo);
      flat.push_back(hi);
    }
    return array(flat);
  }

  /// A block list in the kBlocks layout (appendBlockList); its row count.
  std::string blockList(std::vector<std::pair<int64_t, int64_t>> pairs,
                        int64_t &rows) {
    std::vector<kernel::i64> data;
    rows = kernel::appendBlockList(
        std::vector<std::pair<kernel::i64, kernel::i64>>(pairs.begin(),
                                                         pairs.end()),
        data);
    return array(std::vector<int64_t>(data.begin(), data.end()));
  }

  /// The class of the whole key block against a key-axis leaf (every query
  /// block gets it).
  std::string keyClass(const RunExpr &e) {
    switch (e.kind) {
    case RunExpr::ListedK:
      return "classifyIntervals(" + ranges(e.ranges) + ", " +
             std::to_string(e.ranges.size()) + ", ctx.k0, ctx.k1)";
    case RunExpr::PeriodicK:
      return "classifyPeriodic(" + lit(e.a) + ", " + lit(e.b) + ", " +
             lit(e.c) + ", ctx.k0, ctx.k1)";
    default: // Shards: the head's keys (shardKeys), a band or a period
      return "[&] {\n      i64 period, phase;\n      shardKeys(" + lit(e.a) +
             ", " + lit(e.b) + ", " + lit(e.c) +
             ", ctx.head, period, phase);\n      return period >= kUnbounded "
             "? classifyBand(phase, phase + " +
             lit(e.a - 1) +
             ", ctx.k0, ctx.k1)\n                                 : "
             "classifyPeriodic(period, " +
             lit(e.a) + ", phase, ctx.k0, ctx.k1);\n    }()";
    }
  }

  std::string leaf(const RunExpr &e) {
    switch (e.kind) {
    case RunExpr::All:
      return "allRunT(ctx, x, kFull)";
    case RunExpr::None:
      return "noRun()";
    case RunExpr::Positions:
      return "positionRunT(ctx, x, " + boundCode(e.lo, false) + ", " +
             boundCode(e.hi, true) + ", " + boundCode(e.flo, false) + ", " +
             boundCode(e.fhi, true) + ")";
    case RunExpr::ListedK:
    case RunExpr::PeriodicK:
    case RunExpr::Shards:
      return "allRunT(ctx, x, " + keyClass(e) + ")";
    case RunExpr::ListedD:
      return "intervalsDRunT(ctx, x, " + ranges(e.ranges) + ", " +
             std::to_string(e.ranges.size()) + ")";
    case RunExpr::ListedP:
      return "intervalsPRunT(ctx, x, " + ranges(e.ranges) + ", " +
             std::to_string(e.ranges.size()) + ")";
    case RunExpr::PeriodicD:
      return "periodicDRunT(ctx, x, " + lit(e.a) + ", " + lit(e.b) + ", " +
             lit(e.c) + ")";
    case RunExpr::PeriodicP:
      return "periodicPRunT(ctx, x, " + lit(e.a) + ", " + lit(e.b) + ", " +
             lit(e.c) + ")";
    case RunExpr::Groups:
      return "groupsRunT(ctx, x, " + lit(e.a) + ", " + lit(e.b) + ")";
    case RunExpr::Blocks: {
      // e.blocks are (key block, query block) pairs; blocksRunT reads the
      // forward list (to classify) and this transposed one (to search).
      std::vector<std::pair<int64_t, int64_t>> forward;
      for (auto [kb, qb] : e.blocks)
        forward.push_back({qb, kb});
      int64_t rows = 0, cols = 0;
      std::string ids = blockList(forward, rows);
      std::string tids = blockList(e.blocks, cols);
      return "blocksRunT(ctx, x, " + lit(e.a) + ", " + lit(e.b) + ", " +
             lit(rows) + ", " + ids + ", " + lit(cols) + ", " + tids + ")";
    }
    default: // not produced by transposeRuns: every tile, masked
      return "allRunT(ctx, x, kPartial)";
    }
  }

  /// Emits the lambdas of a run expression; returns the root's name.
  std::string runs(const RunExpr &e) {
    std::string body;
    if (e.kind == RunExpr::Union) {
      std::vector<std::string> names;
      for (const RunExpr &c : e.children)
        names.push_back(runs(c));
      body = names.empty() ? "noRun()" : names[0] + "(x)";
      for (size_t i = 1; i < names.size(); ++i)
        body = "unionOf(" + body + ", " + names[i] + "(x))";
    } else if (e.kind == RunExpr::Intersect || e.kind == RunExpr::Difference) {
      std::vector<std::string> names;
      for (const RunExpr &c : e.children)
        names.push_back(runs(c));
      const char *fn =
          e.kind == RunExpr::Intersect ? "intersectRuns" : "differenceRuns";
      if (names.empty()) {
        body = "allRunT(ctx, x, kFull)";
      } else {
        std::string acc = names[0];
        for (size_t i = 1; i + 1 < names.size(); ++i) {
          std::string n = "r" + std::to_string(lambdas++);
          code << "    auto " << n << " = [&](i64 x) -> Run { return " << fn
               << "(" << acc << ", " << names[i] << ", x); };\n";
          acc = n;
        }
        body = names.size() == 1
                   ? acc + "(x)"
                   : std::string(fn) + "(" + acc + ", " + names.back() + ", x)";
      }
    } else {
      body = leaf(e);
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

std::string tessera::schedule::emitTransposedCode(const RunExpr &transposed,
                                                  const std::string &name) {
  TransposedEmitter em(name);
  std::string root = em.runs(transposed);
  std::ostringstream os;
  os << em.decls.str() << "struct " << name << " {\n"
     << "  static TESSERA_HD Run runFromT(const TRunCtx &ctx, i64 qb) {\n"
     << em.code.str() << "    return " << root << "(qb);\n  }\n};\n";
  return os.str();
}
