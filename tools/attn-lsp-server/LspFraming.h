//===- LspFraming.h - bounded reading of LSP messages -----------*- C++ -*-===//
//
// attn-lsp-server reads its input itself before MLIR's LSP transport sees
// it: MLIR's reader skips a malformed frame without a word, and the JSON
// parser behind it recurses once per nesting level (100,000 nested
// brackets overflow the stack). LspFrameReader splits the byte stream into
// messages, in either of the transport's styles:
//
//   * standard (the LSP specification): headers "Name: value" ending in
//     "\r\n" (a bare "\n" is accepted), a blank line, then exactly
//     Content-Length bytes of body;
//   * delimited (-lit-test, --input-style=delimited): messages separated by
//     "// -----" lines; other lines starting with "//" are comments.
//
// A frame that cannot be read (a header that is not "Name: value", no or a
// bad Content-Length, a body over kMaxLspMessageBytes, input ending inside
// the headers or the body) is an Error with a message: the stream cannot be
// resynchronised after it.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_TOOLS_LSPFRAMING_H
#define TESSERA_TOOLS_LSPFRAMING_H

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringRef.h"

#include <algorithm>
#include <cstddef>
#include <functional>
#include <string>
#include <sys/types.h>

namespace tessera {

/// The largest message body read (a pattern file is at most 64 MiB; its
/// JSON escaping may grow it).
constexpr size_t kMaxLspMessageBytes = size_t(128) << 20;
/// The longest header line.
constexpr size_t kMaxLspHeaderBytes = 4096;

/// Splits a byte stream into LSP messages (see the file comment).
class LspFrameReader {
public:
  /// `read(buffer, size)` returns the number of bytes read, 0 at the end of
  /// the input, negative on an error.
  using ReadFn = std::function<ssize_t(char *, size_t)>;
  enum class Status { Message, End, Error };

  LspFrameReader(ReadFn read, bool delimited)
      : read(std::move(read)), delimited(delimited) {}

  /// The next message's body in `body`; End at the end of the input between
  /// messages; Error with `error` set otherwise.
  Status next(std::string &body, std::string &error) {
    return delimited ? nextDelimited(body, error) : nextStandard(body, error);
  }

private:
  /// One byte into `c`; false at the end of the input (or an error, with
  /// `failed` set).
  bool get(char &c) {
    if (pos == len) {
      if (atEnd)
        return false;
      ssize_t n = read(buffer, sizeof(buffer));
      if (n <= 0) {
        atEnd = true;
        failed = n < 0;
        return false;
      }
      pos = 0;
      len = size_t(n);
    }
    c = buffer[pos++];
    return true;
  }

  /// A line without its "\n" (and "\r") into `line`; false at the end of
  /// the input before any byte, or past `limit` bytes (`tooLong` set).
  bool getLine(std::string &line, size_t limit, bool &tooLong) {
    line.clear();
    tooLong = false;
    char c;
    bool any = false;
    while (get(c)) {
      any = true;
      if (c == '\n') {
        if (!line.empty() && line.back() == '\r')
          line.pop_back();
        return true;
      }
      if (line.size() >= limit) {
        tooLong = true;
        return false;
      }
      line += c;
    }
    return any;
  }

  static std::string excerpt(llvm::StringRef s) {
    std::string e = s.take_front(40).str();
    for (char &c : e)
      if (!llvm::isPrint(c))
        c = '?';
    return "'" + e + (s.size() > 40 ? "...'" : "'");
  }

  Status nextStandard(std::string &body, std::string &error) {
    std::string line;
    bool tooLong, started = false, haveLength = false;
    uint64_t length = 0;
    for (;;) {
      if (!getLine(line, kMaxLspHeaderBytes, tooLong)) {
        if (tooLong) {
          error = "a header line is longer than " +
                  std::to_string(kMaxLspHeaderBytes) + " bytes";
          return Status::Error;
        }
        if (failed) {
          error = "the input cannot be read";
          return Status::Error;
        }
        if (!started)
          return Status::End;
        error = "the input ends inside a message's headers";
        return Status::Error;
      }
      // Blank lines between messages are tolerated.
      if (line.empty() && !started)
        continue;
      started = true;
      if (line.empty())
        break;
      size_t colon = line.find(':');
      llvm::StringRef name = llvm::StringRef(line).substr(0, colon);
      if (colon == std::string::npos || name.empty() ||
          !llvm::all_of(name, [](char c) {
            return llvm::isAlnum(c) || c == '-' || c == '_';
          })) {
        error = "expected a header such as 'Content-Length: N', got " +
                excerpt(line);
        return Status::Error;
      }
      if (name.equals_insensitive("Content-Length")) {
        llvm::StringRef value = llvm::StringRef(line).substr(colon + 1).trim();
        if (value.empty() || value.size() > 12 ||
            !llvm::all_of(value, llvm::isDigit) ||
            value.getAsInteger(10, length) || length == 0 ||
            length > kMaxLspMessageBytes) {
          error = "bad Content-Length " + excerpt(value) +
                  " (a length in [1, " + std::to_string(kMaxLspMessageBytes) +
                  "] bytes)";
          return Status::Error;
        }
        haveLength = true;
      }
    }
    if (!haveLength) {
      error = "a message without a Content-Length header";
      return Status::Error;
    }
    body.clear();
    body.reserve(size_t(length));
    char c;
    while (body.size() < length && get(c)) {
      body += c;
      // The rest of the buffer at once.
      size_t n = std::min(len - pos, size_t(length) - body.size());
      body.append(buffer + pos, n);
      pos += n;
    }
    if (body.size() < length) {
      error = "the input ends " + std::to_string(body.size()) +
              " bytes into a message of Content-Length " +
              std::to_string(length);
      return Status::Error;
    }
    return Status::Message;
  }

  Status nextDelimited(std::string &body, std::string &error) {
    std::string line;
    bool tooLong;
    body.clear();
    for (;;) {
      if (!getLine(line, kMaxLspMessageBytes, tooLong)) {
        if (tooLong) {
          error = "a line is longer than " +
                  std::to_string(kMaxLspMessageBytes) + " bytes";
          return Status::Error;
        }
        if (failed) {
          error = "the input cannot be read";
          return Status::Error;
        }
        return llvm::StringRef(body).trim().empty() ? Status::End
                                                    : Status::Message;
      }
      llvm::StringRef trimmed = llvm::StringRef(line).trim();
      if (trimmed.starts_with("//")) {
        if (trimmed == "// -----" && !llvm::StringRef(body).trim().empty())
          return Status::Message;
        continue;
      }
      if (body.size() + line.size() + 1 > kMaxLspMessageBytes) {
        error = "a message is larger than " +
                std::to_string(kMaxLspMessageBytes) + " bytes";
        return Status::Error;
      }
      body += line;
      body += '\n';
    }
  }

  ReadFn read;
  bool delimited;
  char buffer[1 << 16];
  size_t pos = 0, len = 0;
  bool atEnd = false, failed = false;
};

} // namespace tessera

#endif // TESSERA_TOOLS_LSPFRAMING_H
