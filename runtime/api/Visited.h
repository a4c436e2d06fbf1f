//===- Visited.h - what the C API's files share ------------------*- C++ -*-===//
//
// Api.cpp owns the bundle and context objects and the per-thread error;
// the C API's other files (Visited.cpp) reach them through these two hooks
// instead of a copy of the structs.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_RUNTIME_VISITED_H
#define TESSERA_RUNTIME_VISITED_H

#include "Manifest.h"

#include "tessera/tessera.h"

#include <string>

namespace tessera::runtime {

/// Layer `index` of `bundle` (by its index in the pattern file), or null.
/// Defined in Api.cpp.
const LayerDesc *bundleLayer(const tessera_bundle *bundle, int64_t index);

/// Sets this thread's tessera_last_error() to `message` ("" clears it) and
/// returns `status`. Defined in Api.cpp.
tessera_status setLastError(tessera_status status, const std::string &message);

} // namespace tessera::runtime

#endif // TESSERA_RUNTIME_VISITED_H
