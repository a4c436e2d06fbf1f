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

#include <vector>

namespace tessera::kernel {

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
