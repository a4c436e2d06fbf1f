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
#include <string_view>
#include <vector>

using namespace tessera::jit;

static const char kUsage[] =
    "USAGE: attn-nvrtc-check [options] <bundle directory>\n"
    "       attn-nvrtc-check --probe\n"
    "\n"
    "Compiles DIR/bundle.cu (written by attn-translate FILE -o DIR) with "
    "NVRTC\n"
    "and prints each kernel's registers, stack, spills and shared memory.\n"
    "\n"
    "OPTIONS:\n"
    "  --arch=<sm_XX>  - target architecture; repeat for several (sm_80 "
    "sm_90)\n"
    "  --cache=<dir>   - compile through the runtime's kernel cache in <dir>\n"
    "                    and report hits and misses\n"
    "  --probe         - only check that NVRTC loads (exit 77 if it does not)\n"
    "  --help          - Display available options\n"
    "  --version       - Display the version of this program\n"
    "\n"
    "Exit status: 0 clean, 1 a compile failed or a kernel spills, 2 bad\n"
    "arguments or a missing bundle, 77 NVRTC is not available.\n";

static int usage(const char *problem) {
  std::fprintf(stderr, "attn-nvrtc-check: error: %s\n%s", problem, kUsage);
  return 2;
}

/// Matches `--name VALUE` and `--name=VALUE` (also with one dash).
static bool takeValue(int argc, char **argv, int &i, const char *name,
                      std::string &value) {
  const char *a = argv[i];
  if (a[0] != '-')
    return false;
  a += a[1] == '-' ? 2 : 1;
  size_t n = std::strlen(name);
  if (std::strncmp(a, name, n))
    return false;
  if (a[n] == '=') {
    value = a + n + 1;
    return true;
  }
  if (a[n] != 0 || i + 1 >= argc)
    return false;
  value = argv[++i];
  return true;
}

int main(int argc, char **argv) {
  std::string dir, cache;
  std::vector<std::string> archs;
  bool probe = false;
  for (int i = 1; i < argc; ++i) {
    std::string value;
    std::string_view a = argv[i];
    if (a == "--help" || a == "-help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    }
    if (a == "--version" || a == "-version") {
      std::printf("attn-nvrtc-check (Tessera %s)\n", TESSERA_VERSION);
      return 0;
    }
    if (a == "--probe" || a == "-probe")
      probe = true;
    else if (takeValue(argc, argv, i, "arch", value))
      archs.push_back(value);
    else if (takeValue(argc, argv, i, "cache", value))
      cache = value;
    else if (argv[i][0] != '-' && dir.empty())
      dir = argv[i];
    else if (argv[i][0] != '-')
      return usage(("a second bundle directory '" + std::string(a) +
                    "': check one bundle per run")
                       .c_str());
    else
      return usage(
          ("unknown option '" + std::string(a) + "' (or it lacks its value)")
              .c_str());
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
  if (dir.empty())
    return usage("no bundle directory given");
  if (archs.empty())
    return usage("no architecture given: add --arch=sm_80 (or sm_90)");
  std::ifstream in(dir + "/bundle.cu");
  if (!in) {
    std::fprintf(stderr,
                 "attn-nvrtc-check: error: cannot read %s/bundle.cu; write a "
                 "bundle with 'attn-translate FILE -o %s' first\n",
                 dir.c_str(), dir.c_str());
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
      // The backward kernels (tessera_bwd_*) sit at 248-255 registers with
      // one pattern; more patterns per element type and head dim spill a
      // little (docs/backward.md): reported, not a failure.
      bool backward = k.kernel.rfind("tessera_bwd_", 0) == 0;
      bool spills = k.spillStores || k.spillLoads;
      if (k.registers < 0) // an out-of-line device function
        std::printf("%s   %s: %ld bytes stack, %ld spill stores, %ld spill "
                    "loads%s\n",
                    arch.c_str(), k.kernel.c_str(), k.stackBytes, k.spillStores,
                    k.spillLoads, spills ? "  SPILLS" : "");
      else
        std::printf(
            "%s %s: %d registers, %ld bytes stack, %ld spill stores, "
            "%ld spill loads, %ld bytes smem%s\n",
            arch.c_str(), k.kernel.c_str(), k.registers, k.stackBytes,
            k.spillStores, k.spillLoads, k.sharedBytes,
            spills ? (backward ? "  spilled (a backward kernel: not a failure)"
                               : "  SPILLS")
                   : "");
      if (spills && !backward)
        status = 1;
    }
    std::printf("%s: cubin %zu bytes\n", arch.c_str(), r.binary.size());
  }
  return status;
}
