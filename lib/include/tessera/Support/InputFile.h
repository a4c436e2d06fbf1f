//===- InputFile.h - bounded reads of the tools' input files ----*- C++ -*-===//
//
// The tools read pattern files from a path or from stdin ("-"). A path must
// name a regular file (a FIFO or a device such as /dev/zero could block or
// never end) and every input is at most kMaxInputBytes: a clear error, never
// unbounded memory.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SUPPORT_INPUTFILE_H
#define TESSERA_SUPPORT_INPUTFILE_H

#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"

#include <memory>
#include <string>
#include <unistd.h>

namespace tessera {

/// The largest pattern file the tools read.
constexpr uint64_t kMaxInputBytes = uint64_t(64) << 20;

/// Checks that `path` ("-" is stdin and passes) is a regular file of at most
/// kMaxInputBytes; else returns false with `error` set.
inline bool checkInputFile(llvm::StringRef path, std::string &error) {
  if (path == "-")
    return true;
  llvm::sys::fs::file_status st;
  if (std::error_code ec = llvm::sys::fs::status(path, st)) {
    error = "cannot open input file '" + path.str() + "': " + ec.message();
    return false;
  }
  if (st.type() != llvm::sys::fs::file_type::regular_file) {
    error = path.str() + " is not a regular file";
    return false;
  }
  if (st.getSize() > kMaxInputBytes) {
    error = path.str() + " is larger than " + std::to_string(kMaxInputBytes) +
            " bytes";
    return false;
  }
  return true;
}

/// Reads a pattern file (checked as above) or at most kMaxInputBytes of
/// stdin; null with `error` set otherwise.
inline std::unique_ptr<llvm::MemoryBuffer>
openPatternFile(llvm::StringRef path, std::string &error) {
  if (!checkInputFile(path, error))
    return nullptr;
  if (path != "-") {
    auto buf = llvm::MemoryBuffer::getFile(path, /*IsText=*/true);
    if (!buf) {
      error = "cannot read " + path.str() + ": " + buf.getError().message();
      return nullptr;
    }
    return std::move(*buf);
  }
  std::string text;
  char chunk[1 << 16];
  for (;;) {
    ssize_t n = ::read(0, chunk, sizeof(chunk));
    if (n < 0) {
      error = "cannot read stdin";
      return nullptr;
    }
    if (n == 0)
      break;
    if (text.size() + size_t(n) > kMaxInputBytes) {
      error = "stdin holds more than " + std::to_string(kMaxInputBytes) +
              " bytes";
      return nullptr;
    }
    text.append(chunk, size_t(n));
  }
  return llvm::MemoryBuffer::getMemBufferCopy(text, "<stdin>");
}

} // namespace tessera

#endif // TESSERA_SUPPORT_INPUTFILE_H
