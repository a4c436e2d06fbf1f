//===- Cache.cpp - the on-disk kernel cache -------------------------------===//

#include "tessera/jit/Cache.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/SHA256.h"

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <thread>
#include <unistd.h>

using namespace tessera::jit;

namespace {

constexpr char kMagic[8] = {'T', 'S', 'R', 'C', 'U', 'B', 'N', '1'};
constexpr size_t kHeader = 8 + 8 + 32; // magic, size, SHA-256 of payload

std::array<uint8_t, 32> digest(const char *data, size_t size) {
  llvm::SHA256 h;
  h.update(
      llvm::ArrayRef<uint8_t>(reinterpret_cast<const uint8_t *>(data), size));
  return h.final();
}

/// mkdir -p; true when the directory exists afterwards.
bool makeDirs(const std::string &path) {
  if (path.empty())
    return false;
  std::string partial;
  size_t i = 0;
  while (i != std::string::npos) {
    i = path.find('/', i + 1);
    partial = path.substr(0, i);
    if (partial.empty())
      continue;
    if (mkdir(partial.c_str(), 0755) != 0 && errno != EEXIST)
      return false;
  }
  struct stat st;
  return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

/// The largest cache entry read (cubins of whole bundles are a few MiB).
constexpr size_t kMaxEntryBytes = size_t(256) << 20;

/// Reads a whole cache entry; false if it is not a readable regular file of
/// at most kMaxEntryBytes (a FIFO or a device there is ignored, never read).
bool readFile(const std::string &path, std::vector<char> &out) {
  std::string text, error;
  if (!tessera::jit::readRegularFile(path, kMaxEntryBytes, text, error))
    return false;
  out.assign(text.begin(), text.end());
  return true;
}

/// The payload of an intact entry, or false.
bool decode(const std::vector<char> &file, std::vector<char> &payload) {
  if (file.size() < kHeader || std::memcmp(file.data(), kMagic, 8) != 0)
    return false;
  uint64_t size;
  std::memcpy(&size, file.data() + 8, 8);
  if (size != file.size() - kHeader)
    return false;
  auto d = digest(file.data() + kHeader, size);
  if (std::memcmp(d.data(), file.data() + 16, 32) != 0)
    return false;
  payload.assign(file.begin() + kHeader, file.end());
  return true;
}

/// Writes an entry atomically: a unique temporary file, then rename.
bool store(const std::string &path, const std::vector<char> &payload) {
  static std::atomic<uint64_t> counter{0};
  std::string tmp =
      path + ".tmp." + std::to_string(getpid()) + "." +
      std::to_string(std::hash<std::thread::id>()(std::this_thread::get_id())) +
      "." + std::to_string(counter++);
  int fd = open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0)
    return false;
  uint64_t size = payload.size();
  auto d = digest(payload.data(), payload.size());
  std::string header(kMagic, 8);
  header.append(reinterpret_cast<const char *>(&size), 8);
  header.append(reinterpret_cast<const char *>(d.data()), 32);
  bool ok = write(fd, header.data(), header.size()) ==
                static_cast<ssize_t>(header.size()) &&
            write(fd, payload.data(), payload.size()) ==
                static_cast<ssize_t>(payload.size());
  ok = (close(fd) == 0) && ok;
  if (ok && std::rename(tmp.c_str(), path.c_str()) == 0)
    return true;
  unlink(tmp.c_str());
  return false;
}

} // namespace

std::string tessera::jit::defaultCacheDir() {
  if (const char *d = std::getenv("TESSERA_CACHE_DIR"); d && *d)
    return d;
  if (const char *x = std::getenv("XDG_CACHE_HOME"); x && *x)
    return std::string(x) + "/tessera";
  if (const char *h = std::getenv("HOME"); h && *h)
    return std::string(h) + "/.cache/tessera";
  return "";
}

std::string tessera::jit::cacheKey(const std::string &source,
                                   const std::string &arch,
                                   const std::vector<std::string> &options,
                                   const std::string &nvrtcVersion) {
  llvm::SHA256 h;
  auto part = [&](const std::string &s) {
    uint64_t n = s.size();
    h.update(llvm::StringRef(reinterpret_cast<const char *>(&n), 8));
    h.update(s);
  };
  part(source);
  part(arch);
  part(nvrtcVersion);
  for (const std::string &o : options)
    part(o);
  return llvm::toHex(h.final(), /*LowerCase=*/true);
}

CachedCompile tessera::jit::compileCached(
    const Nvrtc &nvrtc, const std::string &source, const std::string &arch,
    const std::vector<std::string> &options, const std::string &cacheDir) {
  CachedCompile r;
  std::string key = cacheKey(source, arch, options, nvrtc.version());
  bool usable = makeDirs(cacheDir);
  if (usable) {
    r.entryPath = cacheDir + "/" + key + ".cubin";
    std::vector<char> file;
    if (readFile(r.entryPath, file)) {
      if (decode(file, r.binary)) {
        r.ok = r.hit = true;
        return r;
      }
      r.recompiled = true; // present but corrupt: never trusted
    }
  } else {
    r.warning = "kernel cache directory '" + cacheDir +
                "' cannot be created or used; compiling without a cache";
  }
  CompileResult c = nvrtc.compile(source, "bundle.cu", arch, options);
  if (!c.ok) {
    r.error = c.log;
    return r;
  }
  r.ok = true;
  r.binary = std::move(c.binary);
  if (usable && !store(r.entryPath, r.binary))
    r.warning = "kernel cache directory '" + cacheDir +
                "' is not writable; the kernel was compiled but not cached";
  return r;
}

bool tessera::jit::readRegularFile(const std::string &path, size_t maxBytes,
                                   std::string &out, std::string &error) {
  // O_NONBLOCK: opening a FIFO must not wait for a writer.
  int fd = open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    error = "cannot open " + path + ": " + std::strerror(errno);
    return false;
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    error = path + " is not a regular file";
    return false;
  }
  if (uint64_t(st.st_size) > maxBytes) {
    close(fd);
    error = path + " is larger than " + std::to_string(maxBytes) + " bytes";
    return false;
  }
  out.clear();
  char buf[1 << 16];
  for (;;) {
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      error = "cannot read " + path + ": " + std::strerror(errno);
      close(fd);
      return false;
    }
    if (n == 0)
      break;
    if (out.size() + size_t(n) > maxBytes) {
      error = path + " is larger than " + std::to_string(maxBytes) + " bytes";
      close(fd);
      return false;
    }
    out.append(buf, size_t(n));
  }
  close(fd);
  return true;
}
