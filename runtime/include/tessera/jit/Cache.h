//===- Cache.h - the on-disk kernel cache -----------------------*- C++ -*-===//
//
// Cubins compiled by NVRTC are kept under a cache directory, named by the
// SHA-256 of (source, options, NVRTC version, arch). Each entry carries its
// payload's size and SHA-256, so a corrupt or truncated entry is detected and
// recompiled, never trusted. Entries are written to a temporary file and
// renamed into place, so concurrent threads and processes only ever see
// complete entries. An unusable directory degrades to compiling without a
// cache, with one warning on stderr.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_JIT_CACHE_H
#define TESSERA_JIT_CACHE_H

#include "tessera/jit/Nvrtc.h"

#include <string>
#include <vector>

namespace tessera::jit {

/// Reads a whole file that must be a regular file (not a FIFO, a device or
/// a directory: those could block or never end) of at most `maxBytes`;
/// false with `error` set otherwise.
bool readRegularFile(const std::string &path, size_t maxBytes,
                     std::string &out, std::string &error);

/// $TESSERA_CACHE_DIR, else $XDG_CACHE_HOME/tessera, else
/// $HOME/.cache/tessera; "" when none can be formed.
std::string defaultCacheDir();

struct CachedCompile {
  bool ok = false;
  bool hit = false;        ///< read from the cache
  bool recompiled = false; ///< a corrupt entry was replaced
  std::string error;       ///< NVRTC's log when !ok
  std::string warning;     ///< why the cache was not used, if it was not
  std::string entryPath;
  std::vector<char> binary;
};

/// The cache key: lower-case hex SHA-256.
std::string cacheKey(const std::string &source, const std::string &arch,
                     const std::vector<std::string> &options,
                     const std::string &nvrtcVersion);

/// Returns the cubin for `source` on `arch`, from `cacheDir` when present and
/// intact, else compiled with NVRTC and stored there.
CachedCompile compileCached(const Nvrtc &nvrtc, const std::string &source,
                            const std::string &arch,
                            const std::vector<std::string> &options,
                            const std::string &cacheDir);

} // namespace tessera::jit

#endif // TESSERA_JIT_CACHE_H
