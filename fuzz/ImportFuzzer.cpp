//===- ImportFuzzer.cpp - MInference configs through attn-import ----------===//
//
// libFuzzer harness: the input is an MInference config (JSON). It goes
// through attn-import's importer (tools/attn-import/Import.h: the bounded
// JSON reader, the head-key checks, the pattern of each head); a config it
// accepts must give a pattern file that parses as exactly one attn.model
// named @minference (nothing the config holds may reach the text as MLIR of
// its own) or fails to verify with a diagnostic (GQA, parameter ranges).
// Errors are fine; crashes, hangs, sanitizer reports and a second top-level
// op are findings.
//
//===----------------------------------------------------------------------===//

#include "Import.h"

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Dialect/Attn/AttnOps.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Parser/Parser.h"

#include <cstdio>
#include <cstdlib>

using namespace mlir;
using namespace tessera;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static MLIRContext *ctx = [] {
    auto *c = new MLIRContext();
    c->getOrLoadDialect<attn::AttnDialect>();
    c->printOpOnDiagnostic(false);
    return c;
  }();
  std::string text, error;
  minference::ImportOptions options;
  if (!minference::importConfig(
          llvm::StringRef(reinterpret_cast<const char *>(data), size), options,
          text, error)) {
    if (error.empty()) {
      std::fprintf(stderr, "ImportFuzzer: a refusal without a message\n");
      std::abort();
    }
    return 0;
  }
  ScopedDiagnosticHandler quiet(ctx, [](Diagnostic &) { return success(); });
  OwningOpRef<ModuleOp> module = parseSourceString<ModuleOp>(text, ctx);
  if (!module)
    return 0;
  auto &ops = module->getBody()->getOperations();
  auto model = ops.size() == 1 ? llvm::dyn_cast<attn::ModelOp>(ops.front())
                               : attn::ModelOp();
  if (!model || model.getSymName() != "minference") {
    std::fprintf(stderr,
                 "ImportFuzzer: the imported text holds more than "
                 "the model:\n%s\n",
                 text.c_str());
    std::abort();
  }
  return 0;
}
