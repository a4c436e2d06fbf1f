//===- attn-lsp-server.cpp - editor support for pattern files -------------===//
//
// MLIR's language server with the attn dialect: diagnostics (the parser's
// and the verifier's, as attn-opt reports them), hover, go to definition and
// document symbols in pattern files. Editors start it and talk JSON-RPC over
// stdin/stdout; docs/editors.md shows the VS Code and Neovim set-up.
//
// Hostile input: a thread reads stdin through LspFrameReader and hands the
// transport (over a pipe that replaces fd 0) only well-framed messages
// nested at most kMaxMessageDepth deep. A deeper message is logged and
// dropped (as the transport drops a message that is not JSON); a malformed
// frame is logged and ends the input, and the server exits with status 1.
//
//===----------------------------------------------------------------------===//

#include "LspFraming.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Support/JsonFile.h"
#include "tessera/Support/ToolOptions.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-lsp-server/MlirLspServerMain.h"
#include "llvm/Support/LSP/Logging.h"

#include <atomic>
#include <cerrno>
#include <thread>
#include <unistd.h>

namespace {

/// The deepest nesting of arrays and objects in a message (LSP's own
/// messages nest under 10 deep).
constexpr int kMaxMessageDepth = 64;

/// Set when the input held a frame that could not be read.
std::atomic<bool> badFrame{false};

/// Whether the command line asks for the delimited input style (MLIR's
/// -lit-test implies it).
bool delimitedStyle(int argc, char **argv) {
  for (int i = 1; i < argc; ++i) {
    llvm::StringRef arg = llvm::StringRef(argv[i]).ltrim('-');
    if (arg == "lit-test" || arg == "lit-test=true" || arg == "lit-test=1" ||
        arg == "input-style=delimited" ||
        (arg == "input-style" && i + 1 < argc &&
         llvm::StringRef(argv[i + 1]) == "delimited"))
      return true;
  }
  return false;
}

bool writeAll(int fd, llvm::StringRef data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      return false;
    data = data.drop_front(size_t(n));
  }
  return true;
}

/// Copies the messages of `in` that pass the limits to `out`, in the same
/// style; closes `out` at the end of the input or at a bad frame.
void filterMessages(int in, int out, bool delimited) {
  tessera::LspFrameReader reader(
      [in](char *buffer, size_t size) -> ssize_t {
        for (;;) {
          ssize_t n = ::read(in, buffer, size);
          if (n >= 0 || errno != EINTR)
            return n;
        }
      },
      delimited);
  std::string body, error;
  for (;;) {
    auto status = reader.next(body, error);
    if (status == tessera::LspFrameReader::Status::End)
      break;
    if (status == tessera::LspFrameReader::Status::Error) {
      llvm::lsp::Logger::error("attn-lsp-server: error: {0}; no further "
                               "input is read",
                               error);
      badFrame = true;
      break;
    }
    if (tessera::jsonDepth(body, kMaxMessageDepth) > kMaxMessageDepth) {
      llvm::lsp::Logger::error(
          "attn-lsp-server: error: a message nests arrays and objects more "
          "than {0} deep; it is dropped",
          kMaxMessageDepth);
      continue;
    }
    std::string frame = delimited
                            ? body + "\n// -----\n"
                            : "Content-Length: " + std::to_string(body.size()) +
                                  "\r\n\r\n" + body;
    if (!writeAll(out, frame))
      break;
  }
  ::close(out);
}

} // namespace

int main(int argc, char **argv) {
  // The server's own options (log level, lit-test, pretty, input style) are
  // registered inside MlirLspServerMain; LLVM's are hidden.
  tessera::hideForeignOptions(nullptr);
  tessera::setVersionPrinter("attn-lsp-server");

  // stdin becomes the read end of a pipe that the filter thread fills.
  int pipeFds[2];
  int input = ::dup(0);
  if (input < 0 || ::pipe(pipeFds) != 0 || ::dup2(pipeFds[0], 0) < 0) {
    llvm::errs() << "attn-lsp-server: error: cannot set up the input pipe\n";
    return 1;
  }
  ::close(pipeFds[0]);
  std::thread(filterMessages, input, pipeFds[1], delimitedStyle(argc, argv))
      .detach();

  mlir::DialectRegistry registry;
  registry.insert<tessera::attn::AttnDialect>();
  bool failed = mlir::failed(mlir::MlirLspServerMain(argc, argv, registry));
  return failed || badFrame ? 1 : 0;
}
