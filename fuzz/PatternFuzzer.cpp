//===- PatternFuzzer.cpp - pattern files through the whole compiler -------===//
//
// libFuzzer harness: the input is a pattern file. It is parsed and verified;
// every head's pattern is simplified and the simplified mask compared with
// the original on small sizes (Nq, Nk <= 7, every head: a difference aborts,
// which the fuzzer reports); then the module is canonicalized, scheduled,
// shown as runs and emitted as a CUDA bundle. Errors are fine; crashes,
// hangs, sanitizer reports and mask differences are findings.
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Semantics/FromAttr.h"
#include "tessera/Target/CudaEmitter.h"
#include "tessera/Transforms/Passes.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/Diagnostics.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/SourceMgr.h"

#include <cstdio>
#include <cstdlib>

using namespace mlir;
using namespace tessera;

static void checkSimplification(attn::LayerOp layer) {
  int64_t heads = layer.getNumHeads();
  for (auto op : layer.getBody().front().getOps<attn::HeadsOp>()) {
    attn::PatternAttrInterface p = op.getPattern();
    // Dynamic patterns have no static mask to compare.
    if (!p.isStatic() || !attn::simplifyPattern(p).isStatic())
      continue;
    semantics::Pattern before = semantics::fromAttr(p);
    semantics::Pattern after = semantics::fromAttr(attn::simplifyPattern(p));
    for (int64_t head : op.getHeads())
      for (int64_t nq = 1; nq <= 7; nq += 3)
        for (int64_t nk = 1; nk <= 7; nk += 2)
          for (int64_t q = 0; q < nq; ++q)
            for (int64_t k = 0; k < nk; ++k)
              if (semantics::allowed(before, q, k, head, nq, nk, heads) !=
                  semantics::allowed(after, q, k, head, nq, nk, heads)) {
                std::fprintf(stderr, "simplification changed the mask\n");
                std::abort();
              }
  }
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  static MLIRContext *ctx = [] {
    auto *c = new MLIRContext();
    c->getOrLoadDialect<attn::AttnDialect>();
    c->printOpOnDiagnostic(false);
    return c;
  }();
  ScopedDiagnosticHandler quiet(ctx, [](Diagnostic &) { return success(); });
  llvm::SourceMgr sm;
  sm.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(
          llvm::StringRef(reinterpret_cast<const char *>(data), size), "fuzz"),
      llvm::SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sm, ctx);
  if (!module)
    return 0;
  module->walk([](attn::LayerOp l) { checkSimplification(l); });
  PassManager pm(ctx);
  pm.addPass(createCanonicalizerPass());
  AttnScheduleOptions options;
  pm.addPass(createAttnSchedule(options));
  pm.addPass(createAttnLowerRuns());
  if (failed(pm.run(*module)))
    return 0;
  (void)emitCudaBundle(*module, "fuzz");
  return 0;
}
