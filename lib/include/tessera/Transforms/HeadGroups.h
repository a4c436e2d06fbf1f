//===- HeadGroups.h - fusing heads with identical masks ---------*- C++ -*-===//

#ifndef TESSERA_TRANSFORMS_HEADGROUPS_H
#define TESSERA_TRANSFORMS_HEADGROUPS_H

#include "tessera/Dialect/Attn/AttnOps.h"

#include "llvm/ADT/SmallVector.h"

namespace tessera {

/// Heads sharing one pattern and an identical mask.
struct FusedGroup {
  attn::PatternAttrInterface pattern;
  llvm::SmallVector<int64_t> heads; ///< ascending
};

/// Groups the heads of `layer` by (pattern, what the mask of a head-dependent
/// pattern depends on), ordered by their first head.
llvm::SmallVector<FusedGroup> fuseHeads(attn::LayerOp layer);

} // namespace tessera

#endif // TESSERA_TRANSFORMS_HEADGROUPS_H
