//===- attn-nvrtc-check.cpp - compile a bundle with NVRTC -----------------===//
//
//   attn-nvrtc-check DIR --arch sm_80 --arch sm_90
//
// Compiles DIR/bundle.cu with NVRTC for each architecture with ptxas -v and
// prints, per kernel, registers, stack frame, spills and shared memory. Exits
// 1 when a compile fails or a kernel spills, 2 on bad arguments or a missing
// bundle, and 77 when NVRTC is not available (so tests can say so and skip).
// `--probe` only checks that NVRTC loads. `--cache DIR` compiles through the
// runtime's kernel cache instead and reports hits and misses.
//
//===----------------------------------------------------------------------===//

#include "tessera/jit/Cache.h"
#include "tessera/jit/Nvrtc.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace tessera::jit;

static int usage() {
  std::fprintf(stderr, "usage: attn-nvrtc-check DIR --arch sm_XX [--arch ...]"
                       "\n       attn-nvrtc-check --probe\n");
  return 2;
}

int main(int argc, char **argv) {
  std::string dir, cache;
  std::vector<std::string> archs;
  bool probe = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--probe"))
      probe = true;
    else if (!std::strcmp(argv[i], "--arch") && i + 1 < argc)
      archs.push_back(argv[++i]);
    else if (!std::strcmp(argv[i], "--cache") && i + 1 < argc)
      cache = argv[++i];
    else if (argv[i][0] != '-' && dir.empty())
      dir = argv[i];
    else
      return usage();
  }
  std::string error;
  const Nvrtc *nvrtc = Nvrtc::get(error);
  if (!nvrtc) {
    std::printf("attn-nvrtc-check: %s\n", error.c_str());
    return 77;
  }
  if (probe) {
    std::printf("NVRTC %s\n", nvrtc->version().c_str());
    return 0;
  }
  if (dir.empty() || archs.empty())
    return usage();
  std::ifstream in(dir + "/bundle.cu");
  if (!in) {
    std::fprintf(stderr, "attn-nvrtc-check: error: cannot read %s/bundle.cu\n",
                 dir.c_str());
    return 2;
  }
  std::stringstream ss;
  ss << in.rdbuf();
  int status = 0;
  std::printf("NVRTC %s\n", nvrtc->version().c_str());
  if (!cache.empty()) {
    for (const std::string &arch : archs) {
      CachedCompile c =
          compileCached(*nvrtc, ss.str(), arch, {"-std=c++17"}, cache);
      if (!c.ok) {
        std::printf("%s: COMPILE FAILED\n%s\n", arch.c_str(), c.error.c_str());
        status = 1;
        continue;
      }
      std::printf("%s: %s, cubin %zu bytes%s%s\n", arch.c_str(),
                  c.hit ? "cache hit" : "compiled", c.binary.size(),
                  c.warning.empty() ? "" : "; ", c.warning.c_str());
    }
    return status;
  }
  for (const std::string &arch : archs) {
    CompileResult r = nvrtc->compile(ss.str(), "bundle.cu", arch,
                                     {"-std=c++17", "--ptxas-options=-v"});
    if (!r.ok) {
      std::printf("%s: COMPILE FAILED\n%s\n", arch.c_str(), r.log.c_str());
      status = 1;
      continue;
    }
    std::vector<PtxasReport> reports = parsePtxasReport(r.log);
    if (reports.empty()) {
      std::printf("%s: no ptxas report in the log\n%s\n", arch.c_str(),
                  r.log.c_str());
      status = 1;
    }
    for (const PtxasReport &k : reports) {
      bool spills = k.spillStores || k.spillLoads;
      if (k.registers < 0) // an out-of-line device function
        std::printf("%s   %s: %ld bytes stack, %ld spill stores, %ld spill "
                    "loads%s\n",
                    arch.c_str(), k.kernel.c_str(), k.stackBytes, k.spillStores,
                    k.spillLoads, spills ? "  SPILLS" : "");
      else
        std::printf("%s %s: %d registers, %ld bytes stack, %ld spill stores, "
                    "%ld spill loads, %ld bytes smem%s\n",
                    arch.c_str(), k.kernel.c_str(), k.registers, k.stackBytes,
                    k.spillStores, k.spillLoads, k.sharedBytes,
                    spills ? "  SPILLS" : "");
      if (spills)
        status = 1;
    }
    std::printf("%s: cubin %zu bytes\n", arch.c_str(), r.binary.size());
  }
  return status;
}
