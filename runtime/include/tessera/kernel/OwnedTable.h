//===- OwnedTable.h - host-side storage of schedule tables ------*- C++ -*-===//
//
// The arrays behind a kernel::LayerTable, owned on the host: filled by the
// compiler (lib/Schedule) from patterns and by the runtime from bundle
// manifests. Host-only; never pasted into a bundle.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_KERNEL_OWNEDTABLE_H
#define TESSERA_KERNEL_OWNEDTABLE_H

#include "tessera/kernel/Program.h"

#include <algorithm>
#include <utility>
#include <vector>

namespace tessera::kernel {

/// Appends the kBlocks data of listed (query block, key block) pairs to
/// `out`: the distinct query-block ids, their CSR row starts, then the
/// columns; returns the number of listed rows. O(pairs), whatever the
/// indices.
inline i64 appendBlockList(std::vector<std::pair<i64, i64>> blocks,
                           std::vector<i64> &out) {
  std::sort(blocks.begin(), blocks.end());
  blocks.erase(std::unique(blocks.begin(), blocks.end()), blocks.end());
  std::vector<i64> ids, starts, cols;
  for (auto [qb, kb] : blocks) {
    if (ids.empty() || ids.back() != qb) {
      ids.push_back(qb);
      starts.push_back(static_cast<i64>(cols.size()));
    }
    cols.push_back(kb);
  }
  starts.push_back(static_cast<i64>(cols.size()));
  out.insert(out.end(), ids.begin(), ids.end());
  out.insert(out.end(), starts.begin(), starts.end());
  out.insert(out.end(), cols.begin(), cols.end());
  return static_cast<i64>(ids.size());
}

/// A program: nodes in postfix order and the data they slice.
struct ProgramArrays {
  std::vector<Node> nodes;
  std::vector<i64> data;
};

/// One layer's schedule: the programs of its groups, one after another, and
/// the per-head dispatch table.
struct OwnedLayerTable : ProgramArrays {
  i64 numHeads = 0;
  std::vector<i64> groupBegin;   ///< size: number of groups + 1
  std::vector<i64> computedHead; ///< launch slot -> head
  std::vector<i64> headGroup;    ///< launch slot -> group
  std::vector<i64> skippedHeads; ///< heads that get O = 0, LSE = -inf

  /// A view for the kernel functions; valid while this object lives and is
  /// not modified.
  LayerTable table() const {
    LayerTable t;
    t.nodes = nodes.data();
    t.data = data.data();
    t.groupBegin = groupBegin.data();
    t.computedHead = computedHead.data();
    t.headGroup = headGroup.data();
    t.numComputed = static_cast<i64>(computedHead.size());
    t.numHeads = numHeads;
    t.skippedHead = skippedHeads.data();
    t.numSkipped = static_cast<i64>(skippedHeads.size());
    return t;
  }
};

} // namespace tessera::kernel

#endif // TESSERA_KERNEL_OWNEDTABLE_H
