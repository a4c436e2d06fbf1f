//===- attn-translate.cpp - pattern files to CUDA bundles -----------------===//
//
//   attn-translate FILE -o DIR            writes DIR/bundle.cu and
//                                         DIR/manifest.json
//   attn-translate FILE --emit=cuda       prints the CUDA source
//   attn-translate FILE --emit=manifest   prints the manifest
//
// The input may be a pattern file (L0: it is canonicalized and scheduled for
// the kernel's 64 x 64 tiles) or already scheduled (L1).
//
//===----------------------------------------------------------------------===//

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Target/CudaEmitter.h"
#include "tessera/Transforms/Passes.h"

#include "tessera/Support/InputFile.h"
#include "tessera/Support/ToolOptions.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Pass/PassManager.h"
#include "mlir/Support/FileUtilities.h"
#include "mlir/Transforms/Passes.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"

using namespace mlir;
namespace cl = llvm::cl;

static cl::OptionCategory toolOptions("attn-translate options");
static cl::opt<std::string> inputFile(cl::Positional,
                                      cl::desc("<pattern file, or - for stdin>"),
                                      cl::Required, cl::cat(toolOptions));
static cl::opt<std::string> output("o", cl::desc("bundle directory"),
                                   cl::value_desc("dir"), cl::init(""),
                                   cl::cat(toolOptions));
enum class Emit { Bundle, Cuda, Manifest };
static cl::opt<Emit> emit(
    "emit", cl::desc("what to write"), cl::init(Emit::Bundle),
    cl::cat(toolOptions),
    cl::values(clEnumValN(Emit::Bundle, "bundle",
                          "bundle.cu and manifest.json in the -o directory"),
               clEnumValN(Emit::Cuda, "cuda", "the CUDA source, to stdout"),
               clEnumValN(Emit::Manifest, "manifest",
                          "the manifest, to stdout")));

static cl::opt<int64_t> partBudget(
    "part-budget",
    cl::desc("split attention kernels at this many run-expression nodes of "
             "patterns per kernel (default: per head_dim; docs/bundles.md, "
             "\"Split kernels\")"),
    cl::value_desc("n"), cl::init(0), cl::cat(toolOptions));

static cl::opt<bool> headRouting(
    "head-routing",
    cl::desc("give every layer of static heads the permuted kernel, which "
             "runs per-token head routing (head_active) on CUDA contexts "
             "(docs/runtime.md, \"Per-token head routing\")"),
    cl::init(false), cl::cat(toolOptions));

static int fail(const llvm::Twine &message) {
  llvm::errs() << "attn-translate: error: " << message << "\n";
  return 1;
}

static bool writeFile(llvm::StringRef path, llvm::StringRef text) {
  std::string error;
  auto out = openOutputFile(path, &error);
  if (!out) {
    llvm::errs() << "attn-translate: error: " << error << "\n";
    return false;
  }
  out->os() << text;
  out->keep();
  return true;
}

int main(int argc, char **argv) {
  llvm::InitLLVM y(argc, argv);
  tessera::hideForeignOptions(&toolOptions);
  tessera::setVersionPrinter("attn-translate");
  cl::ParseCommandLineOptions(argc, argv,
                              "Emits CUDA bundles from attention patterns\n");
  if (emit == Emit::Bundle && output.empty())
    return fail("a bundle needs an output directory: -o DIR");
  if (partBudget < 0)
    return fail("--part-budget must be 0 (the default budgets) or positive, "
                "not " + llvm::Twine(int64_t(partBudget)));

  MLIRContext context;
  context.getOrLoadDialect<tessera::attn::AttnDialect>();
  llvm::SourceMgr sourceMgr;
  SourceMgrDiagnosticHandler handler(sourceMgr, &context);
  std::string error;
  auto file = tessera::openPatternFile(inputFile, error);
  if (!file)
    return fail(error);
  sourceMgr.AddNewSourceBuffer(std::move(file), llvm::SMLoc());
  OwningOpRef<ModuleOp> module = parseSourceFile<ModuleOp>(sourceMgr, &context);
  if (!module)
    return 1;

  PassManager pm(&context);
  pm.addPass(createCanonicalizerPass());
  tessera::AttnScheduleOptions options;
  options.blockQ = 64;
  options.blockK = 64;
  pm.addPass(tessera::createAttnSchedule(options));
  if (failed(pm.run(*module)))
    return 1;

  FailureOr<tessera::Bundle> bundle = tessera::emitCudaBundle(
      *module, llvm::sys::path::filename(inputFile), partBudget, headRouting);
  if (failed(bundle))
    return 1;
  std::string manifest;
  llvm::raw_string_ostream(manifest)
      << llvm::formatv("{0:2}", llvm::json::Value(std::move(bundle->manifest)))
      << "\n";

  switch (emit) {
  case Emit::Cuda:
    llvm::outs() << bundle->source;
    return 0;
  case Emit::Manifest:
    llvm::outs() << manifest;
    return 0;
  case Emit::Bundle:
    if (std::error_code ec = llvm::sys::fs::create_directories(output))
      return fail("cannot create " + output + ": " + ec.message());
    llvm::SmallString<256> src(output), man(output);
    llvm::sys::path::append(src, "bundle.cu");
    llvm::sys::path::append(man, "manifest.json");
    return writeFile(src, bundle->source) && writeFile(man, manifest) ? 0 : 1;
  }
  return 0;
}
