//===- attn-viz.cpp - print the dense mask of one head --------------------===//
//
//   attn-viz FILE --layer L --head H --q-len N [--k-len M] [--model NAME]
//
// Prints one line per query row: '#' where the key is allowed, '.' where it is
// not. The mask comes from the reference semantics (docs/patterns.md).
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Semantics/FromAttr.h"

#include "tessera/Support/InputFile.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

using namespace mlir;
using namespace tessera;
namespace cl = llvm::cl;

/// Printing is for people: keep pictures to a size a terminal can show.
static constexpr int64_t kMaxPrinted = 16384;

static cl::opt<std::string> inputFile(cl::Positional,
                                      cl::desc("<pattern file>"), cl::Required);
static cl::opt<int64_t> layerIndex("layer", cl::desc("layer index"),
                                   cl::Required);
static cl::opt<int64_t> headIndex("head", cl::desc("query head index"),
                                  cl::Required);
static cl::opt<int64_t> qLen("q-len", cl::desc("query length Nq"),
                             cl::Required);
static cl::opt<int64_t> kLen("k-len", cl::desc("key length Nk (default: Nq)"),
                             cl::init(0));
static cl::opt<std::string>
    modelName("model", cl::desc("model symbol (default: the only model)"),
              cl::init(""));

static int fail(const llvm::Twine &message) {
  llvm::errs() << "attn-viz: error: " << message << "\n";
  return 1;
}

int main(int argc, char **argv) {
  llvm::InitLLVM y(argc, argv);
  cl::ParseCommandLineOptions(argc, argv,
                              "Prints the dense attention mask of one head\n");
  int64_t nq = qLen, nk = kLen.getNumOccurrences() ? int64_t(kLen) : nq;
  if (nq < 1 || nq > kMaxPrinted)
    return fail("--q-len must be in [1, " + llvm::Twine(kMaxPrinted) +
                "], got " + llvm::Twine(nq));
  if (nk < 1 || nk > kMaxPrinted)
    return fail("--k-len must be in [1, " + llvm::Twine(kMaxPrinted) +
                "], got " + llvm::Twine(nk));

  MLIRContext context;
  context.getOrLoadDialect<attn::AttnDialect>();
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  std::string errorMessage;
  auto file = tessera::openPatternFile(inputFile, errorMessage);
  if (!file)
    return fail(errorMessage);
  sourceMgr.AddNewSourceBuffer(std::move(file), llvm::SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1; // The parser or verifier has reported the problem.

  SmallVector<attn::ModelOp> models;
  for (auto model : module->getOps<attn::ModelOp>())
    if (modelName.empty() || model.getSymName() == modelName)
      models.push_back(model);
  if (models.empty())
    return fail(modelName.empty() ? llvm::Twine("the file holds no attn.model")
                                  : "no attn.model named @" + modelName);
  if (models.size() > 1)
    return fail("the file holds several models; choose one with --model");

  attn::LayerOp layer;
  for (auto l : models.front().getBody().front().getOps<attn::LayerOp>())
    if (l.getIndex() == layerIndex)
      layer = l;
  if (!layer)
    return fail("model @" + models.front().getSymName() + " has no layer " +
                llvm::Twine(int64_t(layerIndex)));
  if (headIndex < 0 || headIndex >= layer.getNumHeads())
    return fail("--head must be in [0, " + llvm::Twine(layer.getNumHeads()) +
                ") for layer " + llvm::Twine(int64_t(layerIndex)) + ", got " +
                llvm::Twine(int64_t(headIndex)));

  semantics::Pattern pattern =
      semantics::fromAttr(layer.getHeadPattern(headIndex));
  llvm::raw_ostream &os = llvm::outs();
  std::string line(static_cast<size_t>(nk), '.');
  for (int64_t q = 0; q < nq; ++q) {
    for (int64_t k = 0; k < nk; ++k)
      line[k] = semantics::allowed(pattern, q, k, headIndex, nq, nk,
                                   layer.getNumHeads())
                    ? '#'
                    : '.';
    os << line << '\n';
  }
  return 0;
}
