//===- attn-opt.cpp - the Tessera optimizer driver ------------------------===//
//
// mlir-opt for pattern files: registers the attn dialect, Tessera's passes
// and the few upstream passes that apply to them.
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Support/InputFile.h"
#include "tessera/Support/ToolOptions.h"
#include "tessera/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/ToolOutputFile.h"

int main(int argc, char **argv) {
  // LLVM's own options are registered by now, MLIR's driver options are not
  // yet: --help shows the driver's options and the passes only.
  tessera::hideForeignOptions(nullptr);
  tessera::setVersionPrinter("attn-opt");
  mlir::DialectRegistry registry;
  registry.insert<tessera::attn::AttnDialect>();
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  tessera::registerTesseraPasses();
  auto [input, output] = mlir::registerAndParseCLIOptions(
      argc, argv, "Tessera pattern optimizer\n", registry);
  // Inputs are regular files or stdin of bounded size (never /dev/zero).
  std::string error;
  std::unique_ptr<llvm::MemoryBuffer> buffer =
      tessera::openPatternFile(input, error);
  if (!buffer) {
    llvm::errs() << "attn-opt: error: " << error << "\n";
    return 1;
  }
  std::unique_ptr<llvm::ToolOutputFile> out =
      mlir::openOutputFile(output, &error);
  if (!out) {
    llvm::errs() << "attn-opt: error: " << error << "\n";
    return 1;
  }
  if (mlir::failed(mlir::MlirOptMain(
          out->os(), std::move(buffer), registry,
          mlir::MlirOptMainConfig::createFromCLOptions())))
    return 1;
  out->keep();
  return 0;
}
