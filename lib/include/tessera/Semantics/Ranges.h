//===- Ranges.h - sets of half-open integer ranges --------------*- C++ -*-===//

#ifndef TESSERA_SEMANTICS_RANGES_H
#define TESSERA_SEMANTICS_RANGES_H

#include <algorithm>
#include <cstdint>
#include <utility>
#include <vector>

namespace tessera::semantics {

using Range = std::pair<int64_t, int64_t>; ///< [first, second)

/// Sorts half-open ranges and merges those that overlap or touch.
inline std::vector<Range> mergeRanges(std::vector<Range> ranges) {
  std::sort(ranges.begin(), ranges.end());
  std::vector<Range> out;
  for (Range r : ranges) {
    if (!out.empty() && r.first <= out.back().second)
      out.back().second = std::max(out.back().second, r.second);
    else
      out.push_back(r);
  }
  return out;
}

} // namespace tessera::semantics

#endif // TESSERA_SEMANTICS_RANGES_H
