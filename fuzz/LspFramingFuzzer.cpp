//===- LspFramingFuzzer.cpp - attn-lsp-server's frame reader --------------===//
//
// libFuzzer harness: the input's first byte picks the style (bit 0:
// delimited) and the size of each read (bits 1-7: 1 to 128 bytes, so
// messages straddle the reader's refills); the rest is the byte stream that
// attn-lsp-server reads from stdin (tools/attn-lsp-server/LspFraming.h).
// Every message read must be within the size limit, and a standard message
// framed again must read back the same. Errors are fine; crashes, hangs,
// sanitizer reports and a difference are findings.
//
//===----------------------------------------------------------------------===//

#include "LspFraming.h"

#include "tessera/Support/JsonFile.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

using namespace tessera;

namespace {
/// A reader over `bytes` in pieces of at most `step` bytes.
LspFrameReader::ReadFn readFrom(llvm::StringRef bytes, size_t step) {
  return [bytes, step, pos = size_t(0)](char *buffer,
                                        size_t size) mutable -> ssize_t {
    size_t n = std::min({size, step, bytes.size() - pos});
    std::memcpy(buffer, bytes.data() + pos, n);
    pos += n;
    return ssize_t(n);
  };
}
} // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0)
    return 0;
  bool delimited = data[0] & 1;
  size_t step = size_t(data[0] >> 1) + 1;
  llvm::StringRef stream(reinterpret_cast<const char *>(data) + 1, size - 1);
  LspFrameReader reader(readFrom(stream, step), delimited);
  std::string body, error;
  for (int i = 0; i < 1 << 16; ++i) {
    LspFrameReader::Status status = reader.next(body, error);
    if (status == LspFrameReader::Status::End)
      break;
    if (status == LspFrameReader::Status::Error) {
      if (error.empty())
        std::abort();
      break;
    }
    // (A delimited message ends each line with "\n", also its last one
    // where the input lacks it: one byte more than the stream.)
    if (body.size() > kMaxLspMessageBytes ||
        body.size() > stream.size() + (delimited ? 1 : 0))
      std::abort();
    (void)jsonDepth(body, 64);
    if (delimited)
      continue;
    std::string frame =
        "Content-Length: " + std::to_string(body.size()) + "\r\n\r\n" + body;
    LspFrameReader again(readFrom(frame, step), false);
    std::string copy, copyError;
    if (again.next(copy, copyError) != LspFrameReader::Status::Message ||
        copy != body) {
      std::fprintf(stderr, "LspFramingFuzzer: a message framed again reads "
                           "back differently\n");
      std::abort();
    }
  }
  return 0;
}
