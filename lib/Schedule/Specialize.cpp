//===- Specialize.cpp - a built dynamic index as a static pattern ---------===//

#include "tessera/Schedule/Specialize.h"

#include <cstddef>

namespace tessera::schedule {

namespace s = tessera::semantics;

s::Pattern verticalSlashPattern(const std::vector<int64_t> &columns,
                                const std::vector<int64_t> &diagonals) {
  std::vector<s::Pattern> parts;
  if (!columns.empty()) {
    // Consecutive columns merge into one half-open range.
    s::VerticalStripe stripe;
    for (int64_t c : columns) {
      if (!stripe.keys.ranges.empty() && stripe.keys.ranges.back().second == c)
        stripe.keys.ranges.back().second = c + 1;
      else
        stripe.keys.ranges.push_back({c, c + 1});
    }
    parts.push_back(s::Pattern{stripe});
  }
  if (!diagonals.empty()) {
    s::MultiDiagonal diag;
    diag.offsets = diagonals;
    diag.width = 0;
    parts.push_back(s::Pattern{diag});
  }
  if (parts.empty())
    return s::Pattern{s::Skip{}};
  if (parts.size() == 1)
    return parts.front();
  return s::Pattern{s::Union{parts}};
}

s::Pattern
blockTopkPattern(int64_t block, int64_t firstBlock,
                 const std::vector<std::vector<int64_t>> &keyBlocks) {
  s::BlockSparse bs;
  bs.blockQ = bs.blockK = block;
  for (std::size_t i = 0; i < keyBlocks.size(); ++i)
    for (int64_t kb : keyBlocks[i])
      bs.blocks.push_back({firstBlock + int64_t(i), kb});
  return s::Pattern{bs};
}

} // namespace tessera::schedule
