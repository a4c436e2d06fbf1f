//===- JsonFile.h - bounded reads of JSON files ----------------*- C++ -*-===//
//
// Every JSON file the compiler and its tools read (MInference configs,
// target descriptions, calibration files) goes through readJsonFile: a path
// must name a regular file, opened without blocking (a FIFO is refused, not
// waited on; /dev/zero is not read), of at most a caller-given size, and its
// arrays and objects may nest at most kMaxJsonDepth deep, counted by a scan
// of the brackets outside strings BEFORE llvm::json::parse, which recurses
// once per level and would overflow the stack on 100,000 nested brackets.
// The bundle manifest reader (runtime/api/Manifest.cpp) applies the same
// limits on its own: the runtime does not link the compiler's headers.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SUPPORT_JSONFILE_H
#define TESSERA_SUPPORT_JSONFILE_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Support/Error.h"
#include "llvm/Support/JSON.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <optional>
#include <string>
#include <sys/stat.h>
#include <unistd.h>

namespace tessera {

/// The deepest nesting of arrays and objects accepted in a JSON file (the
/// project's files nest at most 5 deep).
constexpr int kMaxJsonDepth = 32;

/// Calls f(c) for each character of JSON `text` outside strings (a string's
/// quotes and contents, escapes included, skipped) until f returns false.
/// The cheap scans run before parsing (depth, container counts) share it.
template <typename F> void forEachOutsideStrings(llvm::StringRef text, F f) {
  bool inString = false, escaped = false;
  for (char c : text) {
    if (inString) {
      if (escaped)
        escaped = false;
      else if (c == '\\')
        escaped = true;
      else if (c == '"')
        inString = false;
      continue;
    }
    if (c == '"')
      inString = true;
    else if (!f(c))
      return;
  }
}

/// The nesting depth of arrays and objects in JSON `text`, brackets inside
/// strings skipped; stops counting once it passes `limit`.
inline int jsonDepth(llvm::StringRef text, int limit) {
  int depth = 0, deepest = 0;
  forEachOutsideStrings(text, [&](char c) {
    if (c == '[' || c == '{')
      deepest = std::max(deepest, ++depth);
    else if (c == ']' || c == '}')
      --depth;
    return deepest <= limit;
  });
  return deepest;
}

/// Parses `text` if its arrays and objects nest at most `maxDepth` deep;
/// otherwise nullopt with `error` set to "nests arrays and objects more than
/// N deep" or "is not JSON: <the parser's message>".
inline std::optional<llvm::json::Value>
parseJsonBounded(llvm::StringRef text, std::string &error,
                 int maxDepth = kMaxJsonDepth) {
  if (jsonDepth(text, maxDepth) > maxDepth) {
    error = "nests arrays and objects more than " + std::to_string(maxDepth) +
            " deep";
    return std::nullopt;
  }
  llvm::Expected<llvm::json::Value> value = llvm::json::parse(text);
  if (!value) {
    error = "is not JSON: " + llvm::toString(value.takeError());
    return std::nullopt;
  }
  return std::move(*value);
}

/// Reads all of `path` ("-": stdin) into `text` if it is a regular file of
/// at most `maxBytes` (stdin: if it holds at most `maxBytes`). Otherwise
/// false with `error` set to the problem, without the path: "cannot be read:
/// <why>", "is not a regular file", "is larger than N bytes".
inline bool readBoundedFile(llvm::StringRef path, uint64_t maxBytes,
                            std::string &text, std::string &error) {
  int fd = 0;
  if (path != "-") {
    // O_NONBLOCK: opening a FIFO with no writer returns at once (and is
    // refused below) instead of waiting for one.
    fd = ::open(path.str().c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      error = std::string("cannot be read: ") + std::strerror(errno);
      return false;
    }
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd);
      error = "is not a regular file";
      return false;
    }
    if (uint64_t(st.st_size) > maxBytes) {
      ::close(fd);
      error = "is larger than " + std::to_string(maxBytes) + " bytes";
      return false;
    }
  }
  text.clear();
  char chunk[1 << 16];
  bool ok = true;
  for (;;) {
    ssize_t n = ::read(fd, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      error = std::string("cannot be read: ") + std::strerror(errno);
      ok = false;
      break;
    }
    if (n == 0)
      break;
    // A file that grew after fstat, or stdin, is cut off at the limit.
    if (text.size() + size_t(n) > maxBytes) {
      error = (path == "-" ? "holds more than " : "is larger than ") +
              std::to_string(maxBytes) + " bytes";
      ok = false;
      break;
    }
    text.append(chunk, size_t(n));
  }
  if (fd != 0)
    ::close(fd);
  return ok;
}

/// Reads and parses the JSON file `path` ("-": stdin) under the limits
/// above: at most `maxBytes`, nested at most `maxDepth` deep. Otherwise
/// nullopt with `error` set as readBoundedFile and parseJsonBounded say
/// (without the path; callers name the file).
inline std::optional<llvm::json::Value>
readJsonFile(llvm::StringRef path, uint64_t maxBytes, std::string &error,
             int maxDepth = kMaxJsonDepth) {
  std::string text;
  if (!readBoundedFile(path, maxBytes, text, error))
    return std::nullopt;
  return parseJsonBounded(text, error, maxDepth);
}

} // namespace tessera

#endif // TESSERA_SUPPORT_JSONFILE_H
