//===- attn-lsp-server.cpp - editor support for pattern files -------------===//
//
// MLIR's language server with the attn dialect: diagnostics (the parser's
// and the verifier's, as attn-opt reports them), hover, go to definition and
// document symbols in pattern files. Editors start it and talk JSON-RPC over
// stdin/stdout; docs/editors.md shows the VS Code and Neovim set-up.
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Support/ToolOptions.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-lsp-server/MlirLspServerMain.h"

int main(int argc, char **argv) {
  // The server's own options (log level, lit-test, pretty, input style) are
  // registered inside MlirLspServerMain; LLVM's are hidden.
  tessera::hideForeignOptions(nullptr);
  tessera::setVersionPrinter("attn-lsp-server");
  mlir::DialectRegistry registry;
  registry.insert<tessera::attn::AttnDialect>();
  return mlir::failed(mlir::MlirLspServerMain(argc, argv, registry));
}
