//===- Nvrtc.cpp - NVRTC loaded at run time -------------------------------===//

#include "tessera/jit/Nvrtc.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <regex>

using namespace tessera::jit;

namespace {
// The few NVRTC entry points Tessera uses, with NVRTC's C signatures.
using nvrtcResult = int;
using nvrtcProgram = void *;
} // namespace

struct Nvrtc::Api {
  void *handle = nullptr;
  nvrtcResult (*version)(int *, int *) = nullptr;
  nvrtcResult (*createProgram)(nvrtcProgram *, const char *, const char *, int,
                               const char *const *,
                               const char *const *) = nullptr;
  nvrtcResult (*compileProgram)(nvrtcProgram, int,
                                const char *const *) = nullptr;
  nvrtcResult (*getProgramLogSize)(nvrtcProgram, size_t *) = nullptr;
  nvrtcResult (*getProgramLog)(nvrtcProgram, char *) = nullptr;
  nvrtcResult (*getCUBINSize)(nvrtcProgram, size_t *) = nullptr;
  nvrtcResult (*getCUBIN)(nvrtcProgram, char *) = nullptr;
  nvrtcResult (*destroyProgram)(nvrtcProgram *) = nullptr;
  const char *(*getErrorString)(nvrtcResult) = nullptr;
};

const Nvrtc *Nvrtc::get(std::string &error) {
  static std::once_flag once;
  static Api api;
  static std::string loadError;
  std::call_once(once, [] {
    std::vector<std::string> candidates;
    if (const char *env = std::getenv("TESSERA_NVRTC"))
      candidates.push_back(env);
    for (const char *n : {"libnvrtc.so", "libnvrtc.so.13", "libnvrtc.so.12"})
      candidates.push_back(n);
    const char *roots[] = {std::getenv("CUDA_HOME"), "/usr/local/cuda"};
    for (const char *root : roots)
      if (root)
        candidates.push_back(std::string(root) + "/lib64/libnvrtc.so");
    for (const std::string &c : candidates)
      if ((api.handle = dlopen(c.c_str(), RTLD_NOW | RTLD_LOCAL)))
        break;
    if (!api.handle) {
      loadError = "NVRTC is not available (tried libnvrtc.so, "
                  "libnvrtc.so.13, libnvrtc.so.12, $CUDA_HOME/lib64 and "
                  "/usr/local/cuda/lib64; set TESSERA_NVRTC to its path)";
      return;
    }
    auto sym = [&](auto &fn, const char *name) {
      fn = reinterpret_cast<std::remove_reference_t<decltype(fn)>>(
          dlsym(api.handle, name));
      return fn != nullptr;
    };
    if (!(sym(api.version, "nvrtcVersion") &&
          sym(api.createProgram, "nvrtcCreateProgram") &&
          sym(api.compileProgram, "nvrtcCompileProgram") &&
          sym(api.getProgramLogSize, "nvrtcGetProgramLogSize") &&
          sym(api.getProgramLog, "nvrtcGetProgramLog") &&
          sym(api.getCUBINSize, "nvrtcGetCUBINSize") &&
          sym(api.getCUBIN, "nvrtcGetCUBIN") &&
          sym(api.destroyProgram, "nvrtcDestroyProgram") &&
          sym(api.getErrorString, "nvrtcGetErrorString"))) {
      loadError = "the NVRTC library lacks an entry point Tessera needs";
      dlclose(api.handle);
      api.handle = nullptr;
    }
  });
  if (!api.handle) {
    error = loadError;
    return nullptr;
  }
  static Nvrtc instance(&api);
  return &instance;
}

std::string Nvrtc::version() const {
  int major = 0, minor = 0;
  api->version(&major, &minor);
  return std::to_string(major) + "." + std::to_string(minor);
}

CompileResult Nvrtc::compile(const std::string &source, const std::string &name,
                             const std::string &arch,
                             const std::vector<std::string> &options) const {
  CompileResult result;
  nvrtcProgram prog = nullptr;
  if (int rc = api->createProgram(&prog, source.c_str(), name.c_str(), 0,
                                  nullptr, nullptr)) {
    result.log =
        std::string("nvrtcCreateProgram failed: ") + api->getErrorString(rc);
    return result;
  }
  std::vector<std::string> all = {"--gpu-architecture=" + arch};
  all.insert(all.end(), options.begin(), options.end());
  std::vector<const char *> argv;
  for (const std::string &o : all)
    argv.push_back(o.c_str());
  int rc = api->compileProgram(prog, int(argv.size()), argv.data());
  size_t logSize = 0;
  api->getProgramLogSize(prog, &logSize);
  result.log.assign(logSize, '\0');
  if (logSize)
    api->getProgramLog(prog, result.log.data());
  while (!result.log.empty() && result.log.back() == '\0')
    result.log.pop_back();
  if (rc == 0) {
    size_t size = 0;
    api->getCUBINSize(prog, &size);
    result.binary.resize(size);
    if (size)
      api->getCUBIN(prog, result.binary.data());
    result.ok = size > 0;
  } else {
    result.log = std::string(api->getErrorString(rc)) + "\n" + result.log;
  }
  api->destroyProgram(&prog);
  return result;
}

std::vector<PtxasReport>
tessera::jit::parsePtxasReport(const std::string &log) {
  std::vector<PtxasReport> out;
  // Entry functions and out-of-line device functions both get a section.
  std::regex entry(R"(Compiling entry function '([^']+)')");
  std::regex props(R"(Function properties for (\S+))");
  std::regex frame(
      R"((\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads)");
  std::regex regs(R"(Used (\d+) registers)");
  std::regex smem(R"((\d+) bytes smem)");
  size_t current = 0;
  auto select = [&](const std::string &name) {
    for (size_t i = 0; i < out.size(); ++i)
      if (out[i].kernel == name)
        return current = i;
    out.push_back(PtxasReport());
    out.back().kernel = name;
    return current = out.size() - 1;
  };
  size_t start = 0;
  while (start < log.size()) {
    size_t end = log.find('\n', start);
    if (end == std::string::npos)
      end = log.size();
    std::string line = log.substr(start, end - start);
    start = end + 1;
    std::smatch m;
    if (std::regex_search(line, m, entry) ||
        std::regex_search(line, m, props)) {
      select(m[1]);
      continue;
    }
    if (out.empty())
      continue;
    PtxasReport &r = out[current];
    if (std::regex_search(line, m, frame)) {
      r.stackBytes = std::stol(m[1]);
      r.spillStores = std::stol(m[2]);
      r.spillLoads = std::stol(m[3]);
    }
    if (std::regex_search(line, m, regs))
      r.registers = std::stoi(m[1]);
    if (std::regex_search(line, m, smem))
      r.sharedBytes = std::stol(m[1]);
  }
  return out;
}
