//===- attn-opt.cpp - the Tessera optimizer driver ------------------------===//
//
// mlir-opt for pattern files: registers the attn dialect, Tessera's passes
// and the few upstream passes that apply to them.
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Transforms/Passes.h"

#include "mlir/IR/DialectRegistry.h"
#include "mlir/Tools/mlir-opt/MlirOptMain.h"
#include "mlir/Transforms/Passes.h"

int main(int argc, char **argv) {
  mlir::DialectRegistry registry;
  registry.insert<tessera::attn::AttnDialect>();
  mlir::registerCanonicalizerPass();
  mlir::registerCSEPass();
  tessera::registerTesseraPasses();
  return mlir::asMainReturnCode(
      mlir::MlirOptMain(argc, argv, "Tessera pattern optimizer\n", registry));
}
