//===- jit_bench.cpp - cold NVRTC compiles and warm cache loads -----------===//
//
//   tessera-jit-bench BUNDLE_DIR... [--arch sm_90]...
//
// For each bundle and architecture: the cold compile (NVRTC, into an empty
// cache directory) and the warm load from the cache (median of 20), through
// the runtime's cache (tessera/jit/Cache.h). Prints a Markdown table.
//
//===----------------------------------------------------------------------===//

#include "tessera/jit/Cache.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace tessera::jit;
using Clock = std::chrono::steady_clock;

static double ms(Clock::time_point a) {
  return std::chrono::duration<double, std::milli>(Clock::now() - a).count();
}

int main(int argc, char **argv) {
  std::vector<std::string> bundles, archs;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--arch" && i + 1 < argc)
      archs.push_back(argv[++i]);
    else
      bundles.push_back(a);
  }
  if (archs.empty())
    archs = {"sm_80", "sm_90"};
  std::string error;
  const Nvrtc *nvrtc = Nvrtc::get(error);
  if (!nvrtc) {
    std::fprintf(stderr, "%s\n", error.c_str());
    return 77;
  }
  std::printf(
      "NVRTC %s\n\n| bundle | arch | kernels | cubin KiB | cold compile (ms) "
      "| warm cache load (ms, median of 20) |\n|---|---|---|---|---|---|\n",
      nvrtc->version().c_str());
  for (const std::string &dir : bundles) {
    std::ifstream in(dir + "/bundle.cu");
    std::stringstream ss;
    ss << in.rdbuf();
    std::string source = ss.str();
    int kernels = 0;
    for (size_t p = 0;
         (p = source.find("TESSERA_EXTERN_C __global__", p)) != std::string::npos;
         ++p)
      ++kernels;
    for (const std::string &arch : archs) {
      std::string cache = "/tmp/tessera-jit-bench-cache";
      std::system(("rm -rf " + cache).c_str());
      auto t = Clock::now();
      CachedCompile cold =
          compileCached(*nvrtc, source, arch, {"-std=c++17"}, cache);
      double coldMs = ms(t);
      if (!cold.ok || cold.hit) {
        std::fprintf(stderr, "%s: cold compile failed\n%s\n", dir.c_str(),
                     cold.error.c_str());
        return 1;
      }
      std::vector<double> warm;
      for (int i = 0; i < 20; ++i) {
        t = Clock::now();
        CachedCompile w =
            compileCached(*nvrtc, source, arch, {"-std=c++17"}, cache);
        warm.push_back(ms(t));
        if (!w.hit)
          return 1;
      }
      std::sort(warm.begin(), warm.end());
      std::string name = dir.substr(dir.find_last_of('/') + 1);
      std::printf("| %s | %s | %d | %.0f | %.0f | %.2f |\n", name.c_str(),
                  arch.c_str(), kernels, cold.binary.size() / 1024.0, coldMs,
                  warm[warm.size() / 2]);
    }
  }
  return 0;
}
