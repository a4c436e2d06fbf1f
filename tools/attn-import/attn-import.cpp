//===- attn-import.cpp - pattern files from other systems' configs --------===//
//
//   attn-import CONFIG.json --heads 32 --kv-heads 8 -o model.mlir
//
// Reads MInference's per-model configuration (a JSON list with one object
// per layer mapping each head index to [type, vertical_size, slash_size,
// score], types "vertical_and_slash", "stream_llm", "block_sparse") and
// writes the equivalent Tessera pattern file (docs/patterns.md,
// "Importing MInference configurations"):
//
//   vertical_and_slash V S -> #attn.intersect<#attn.causal,
//       #attn.vertical_slash<last_q = 64, vertical = V, slash = S,
//                            first_columns = 30, last_diagonals = 100>>
//   stream_llm N L         -> #attn.a_shape<sink = N, before = L - 1>
//                             (N = 0: #attn.window<before = L - 1>)
//   block_sparse           -> #attn.intersect<#attn.causal,
//                                 #attn.block_topk<block = 64, top_k = 100>>
//
// Every problem of the file (not a regular file, over 16 MiB, nested past
// 32 levels, not JSON, over 4096 layers or 2^18 heads in all, a layer that
// is not an object, a head index missing, repeated (in any spelling),
// written other than in plain decimal or out of range, an unknown type, a
// size that is negative or not an integer) is an error naming the layer and
// the head; so is an output that cannot be written.
//
//===----------------------------------------------------------------------===//

#include "Import.h"

#include "tessera/Dialect/Attn/AttnOps.h"
#include "tessera/Support/JsonFile.h"
#include "tessera/Support/ToolOptions.h"

#include "mlir/IR/BuiltinOps.h"
#include "mlir/IR/MLIRContext.h"
#include "mlir/Parser/Parser.h"
#include "mlir/Support/FileUtilities.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/InitLLVM.h"
#include "llvm/Support/SourceMgr.h"
#include "llvm/Support/ToolOutputFile.h"

#include <string>

using namespace mlir;
using namespace tessera;
namespace cl = llvm::cl;

static cl::OptionCategory toolOptions("attn-import options");
static cl::opt<std::string> inputFile(cl::Positional,
                                      cl::desc("<MInference config .json>"),
                                      cl::Required, cl::cat(toolOptions));
static cl::opt<std::string> outputFile("o", cl::desc("pattern file to write"),
                                       cl::value_desc("file"), cl::init("-"),
                                       cl::cat(toolOptions));
static cl::opt<int64_t>
    numHeads("heads",
             cl::desc("query heads per layer (default: as many as the first "
                      "layer lists); every layer must list exactly these"),
             cl::init(0), cl::cat(toolOptions));
static cl::opt<int64_t> numKvHeads("kv-heads",
                                   cl::desc("key/value heads (default: heads)"),
                                   cl::init(0), cl::cat(toolOptions));
static cl::opt<int64_t> headDim("head-dim", cl::desc("head dimension"),
                                cl::init(128), cl::cat(toolOptions));
static cl::opt<std::string> dtype("dtype", cl::desc("f16, bf16 or f32"),
                                  cl::init("bf16"), cl::cat(toolOptions));
static cl::opt<std::string> modelName("model",
                                      cl::desc("model symbol to write"),
                                      cl::init("minference"),
                                      cl::cat(toolOptions));
static cl::opt<int64_t>
    lastQ("last-q", cl::desc("vertical_and_slash: queries scored (64)"),
          cl::init(64), cl::cat(toolOptions));
static cl::opt<int64_t> firstColumns(
    "first-columns",
    cl::desc("vertical_and_slash: first key columns always kept (30)"),
    cl::init(30), cl::cat(toolOptions));
static cl::opt<int64_t> lastDiagonals(
    "last-diagonals",
    cl::desc("vertical_and_slash: nearest diagonals always kept (100)"),
    cl::init(100), cl::cat(toolOptions));
static cl::opt<int64_t>
    blockTopK("block-topk",
              cl::desc("block_sparse: key blocks of 64 kept per query block "
                       "(100)"),
              cl::init(100), cl::cat(toolOptions));

static int fail(const llvm::Twine &message) {
  llvm::errs() << "attn-import: error: " << inputFile << ": " << message
               << "\n";
  return 1;
}

int main(int argc, char **argv) {
  llvm::InitLLVM y(argc, argv);
  tessera::hideForeignOptions(&toolOptions);
  tessera::setVersionPrinter("attn-import");
  cl::ParseCommandLineOptions(
      argc, argv, "Writes Tessera pattern files from MInference configs\n");
  minference::ImportOptions options;
  options.heads = numHeads;
  options.kvHeads = numKvHeads;
  options.headDim = headDim;
  options.dtype = dtype;
  options.model = modelName;
  options.lastQ = lastQ;
  options.firstColumns = firstColumns;
  options.lastDiagonals = lastDiagonals;
  options.blockTopK = blockTopK;
  std::string error = minference::checkOptions(options);
  if (!error.empty())
    return fail(error);

  // The whole file, bounded; its nesting is checked before it is parsed.
  std::string config, text;
  if (!tessera::readBoundedFile(inputFile, minference::kMaxConfigBytes, config,
                                error))
    return fail(error);
  if (!minference::importConfig(config, options, text, error))
    return fail(error);

  // Parse what was written: the verifier checks the model (GQA, ranges),
  // and the printer gives the canonical form (head ranges).
  MLIRContext context;
  context.getOrLoadDialect<tessera::attn::AttnDialect>();
  context.printOpOnDiagnostic(false);
  llvm::SourceMgr sourceMgr;
  sourceMgr.AddNewSourceBuffer(
      llvm::MemoryBuffer::getMemBufferCopy(text, "imported"), llvm::SMLoc());
  std::string diagnostics;
  {
    llvm::raw_string_ostream os(diagnostics);
    SourceMgrDiagnosticHandler handler(sourceMgr, &context, os);
    OwningOpRef<ModuleOp> module =
        parseSourceFile<ModuleOp>(sourceMgr, &context);
    if (!module)
      return fail("the imported model does not verify (check --heads, "
                  "--kv-heads, --head-dim):\n" +
                  diagnostics);
    auto out = openOutputFile(outputFile, &error);
    if (!out) {
      llvm::errs() << "attn-import: error: " << error << "\n";
      return 1;
    }
    llvm::raw_fd_ostream &file = out->os();
    file << "// Imported by attn-import from " << inputFile
         << " (MInference config).\n";
    for (Operation &op : module->getBody()->getOperations())
      file << op << "\n";
    // A failed write (a full disk, /dev/full, a closed pipe) is an error,
    // not LLVM's abort when the stream is destroyed with its error set.
    if (outputFile == "-")
      file.flush();
    else
      file.close();
    if (file.has_error()) {
      std::string why = file.error().message();
      file.clear_error();
      // A partial regular file is removed; anything else (a device) stays.
      if (!llvm::sys::fs::is_regular_file(outputFile))
        out->keep();
      llvm::errs() << "attn-import: error: cannot write " << outputFile << ": "
                   << why << "\n";
      return 1;
    }
    out->keep();
  }
  return 0;
}
