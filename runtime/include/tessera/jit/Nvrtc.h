//===- Nvrtc.h - NVRTC loaded at run time -----------------------*- C++ -*-===//
//
// NVRTC is opened with dlopen, so that everything links and the CPU paths run
// on machines without the CUDA toolkit; a missing library is an error value,
// never a crash.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_JIT_NVRTC_H
#define TESSERA_JIT_NVRTC_H

#include <string>
#include <vector>

namespace tessera::jit {

struct CompileResult {
  bool ok = false;
  std::string log;          ///< NVRTC's log (with ptxas -v, its report)
  std::vector<char> binary; ///< the cubin
};

class Nvrtc {
public:
  /// Opens NVRTC: $TESSERA_NVRTC if set, else libnvrtc.so[.13/.12] on the
  /// loader path, then under $CUDA_HOME and /usr/local/cuda. Returns null and
  /// sets `error` when none loads.
  static const Nvrtc *get(std::string &error);

  /// "major.minor" of the loaded NVRTC.
  std::string version() const;

  /// Compiles `source` to a cubin for `arch` ("sm_80", ...).
  CompileResult compile(const std::string &source, const std::string &name,
                        const std::string &arch,
                        const std::vector<std::string> &options) const;

  struct Api;

private:
  explicit Nvrtc(const Api *api) : api(api) {}
  const Api *api;
};

/// Per kernel, what ptxas reported.
struct PtxasReport {
  std::string kernel;
  int registers = -1;
  long stackBytes = 0, spillStores = 0, spillLoads = 0;
  long sharedBytes = 0;
};

/// Parses the `ptxas info` lines of a log compiled with --ptxas-options=-v.
std::vector<PtxasReport> parsePtxasReport(const std::string &log);

} // namespace tessera::jit

#endif // TESSERA_JIT_NVRTC_H
