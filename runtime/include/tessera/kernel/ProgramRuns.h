//===- ProgramRuns.h - run enumeration of a postfix program ----*- C++ -*-===//
//
// The host's walk over a head group's runs when it has the schedule program
// of a bundle manifest and no generated code: the same closed-form leaves
// (leafRunFrom) and the same run algebra (unionOf, intersection, difference)
// as the code the emitter generates for the GPU, evaluated over the program's
// tree. The CPU executor walks these runs, so it visits exactly the tiles the
// CUDA kernels visit, in the same classes. The transposed walk (for a key
// block, the runs of query blocks that see it; the backward's key-major
// pass) is the same tree over the transposed leaves (leafRunFromT), with the
// column-major lists of block-sparse leaves built once here. Host-only.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_PROGRAMRUNS_H
#define TESSERA_KERNEL_PROGRAMRUNS_H

#include "tessera/kernel/OwnedTable.h"
#include "tessera/kernel/Program.h"

#include <vector>

namespace tessera::kernel {

class ProgramRuns {
public:
  /// `nodes[0, count)` is a well-formed postfix program (as lowered and as
  /// validated by the runtime's manifest loader).
  ProgramRuns(const Node *nodes, i64 count, const i64 *data)
      : nodes(nodes), data(data), children(count) {
    std::vector<i64> stack;
    for (i64 i = 0; i < count; ++i) {
      if (nodes[i].kind >= kUnion) {
        i64 arity = nodes[i].axis;
        children[i].assign(stack.end() - arity, stack.end());
        stack.resize(stack.size() - arity);
      }
      stack.push_back(i);
    }
    root = stack.empty() ? -1 : stack.back();
    transposeBlockLists(count);
  }

  /// Calls fn(run) for every run of the query block `c`, in key order.
  template <typename Fn> void forEachRun(const RunCtx &c, Fn fn) const {
    for (Run r = runFrom(c, 0); isRun(r); r = runFrom(c, r.hi + 1))
      fn(r);
  }

  /// The first run at or after key block kb of the query block `c`.
  Run runFrom(const RunCtx &c, i64 kb) const {
    return root < 0 ? noRun() : eval(root, c, kb);
  }

  /// Calls fn(run) for every run of query blocks that see the key block
  /// `c`, in query order.
  template <typename Fn> void forEachRun(const TRunCtx &c, Fn fn) const {
    for (Run r = runFrom(c, 0); isRun(r); r = runFrom(c, r.hi + 1))
      fn(r);
  }

  /// The first run of query blocks at or after qb that see the key block
  /// `c`: the transposed schedule.
  Run runFrom(const TRunCtx &c, i64 qb) const {
    return root < 0 ? noRun() : eval(root, c, qb);
  }

private:
  Run leaf(i64 i, const RunCtx &c, i64 kb) const {
    return leafRunFrom(nodes[i], data, c, kb);
  }

  Run leaf(i64 i, const TRunCtx &c, i64 qb) const {
    const TransposedList &t = transposed[i];
    return leafRunFromT(nodes[i], data, c, qb,
                        t.cols ? tdata.data() + t.begin : nullptr, t.cols);
  }

  /// The run algebra over the tree; Ctx selects the forward or the
  /// transposed leaves.
  template <typename Ctx> Run eval(i64 i, const Ctx &c, i64 kb) const {
    const Node &n = nodes[i];
    const std::vector<i64> &ch = children[i];
    switch (n.kind) {
    case kUnion: {
      Run r = noRun();
      for (i64 x : ch)
        r = unionOf(r, eval(x, c, kb));
      return r;
    }
    case kIntersect:
      for (i64 x = kb;;) {
        Run first = eval(ch[0], c, x);
        if (!isRun(first))
          return first;
        Run r = first;
        bool aligned = true;
        for (size_t j = 1; j < ch.size() && aligned; ++j) {
          Run o = eval(ch[j], c, first.lo);
          if (!isRun(o))
            return o;
          if (o.lo != first.lo) {
            x = o.lo; // nothing of child j in [first.lo, o.lo)
            aligned = false;
            break;
          }
          r.hi = minI(r.hi, o.hi);
          r.cls = r.cls < o.cls ? r.cls : o.cls;
        }
        if (aligned)
          return r;
      }
    case kDifference:
      return differenceRuns(
          [&](i64 x) { return eval(ch[0], c, x); },
          [&](i64 x) { return eval(ch[1], c, x); }, kb);
    default:
      return leaf(i, c, kb);
    }
  }

  /// The column-major list of each kBlocks leaf (the kBlocks layout with
  /// the roles of query and key blocks swapped), in `tdata`.
  void transposeBlockLists(i64 count) {
    transposed.resize(count);
    for (i64 i = 0; i < count; ++i) {
      const Node &n = nodes[i];
      if (n.kind != kBlocks || n.c == 0)
        continue;
      const i64 *ids = data + n.dataBegin;
      const i64 *rowStart = ids + n.c, *cols = rowStart + n.c + 1;
      std::vector<std::pair<i64, i64>> swapped;
      for (i64 r = 0; r < n.c; ++r)
        for (i64 j = rowStart[r]; j < rowStart[r + 1]; ++j)
          swapped.push_back({cols[j], ids[r]});
      transposed[i].begin = static_cast<i64>(tdata.size());
      transposed[i].cols = appendBlockList(std::move(swapped), tdata);
    }
  }

  struct TransposedList {
    i64 begin = 0, cols = 0;
  };

  const Node *nodes;
  const i64 *data;
  std::vector<std::vector<i64>> children;
  std::vector<TransposedList> transposed; ///< per node
  std::vector<i64> tdata;
  i64 root = -1;
};

} // namespace tessera::kernel

#endif // TESSERA_KERNEL_PROGRAMRUNS_H
