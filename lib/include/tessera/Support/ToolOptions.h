//===- ToolOptions.h - the tools' --help and --version ----------*- C++ -*-===//
//
// The tools link libLLVM, whose hundreds of global options (AMDGPU, AArch64,
// profiling ...) would fill every `--help`. hideForeignOptions() hides all
// options registered so far except the generic ones (--help, --version) and
// those of the given category; setVersionPrinter() makes `--version` print
// Tessera's version next to LLVM's.
//
//===----------------------------------------------------------------------===//

#ifndef TESSERA_SUPPORT_TOOLOPTIONS_H
#define TESSERA_SUPPORT_TOOLOPTIONS_H

#include "llvm/ADT/StringRef.h"
#include "llvm/Config/llvm-config.h"
#include "llvm/Support/CommandLine.h"
#include "llvm/Support/raw_ostream.h"

#include <string>

#ifndef TESSERA_VERSION
#error "TESSERA_VERSION must be defined by the build (tools/CMakeLists.txt)"
#endif

namespace tessera {

/// Hides every option registered so far, except the generic ones (--help,
/// --version) and those in `keep` (null: none). A tool whose own options
/// are registered later (attn-opt: MLIR's driver options) calls this before
/// registering them. LLVM's own function does the work: the options live in
/// libLLVM, built without RTTI, so touching them from our (sanitized) code
/// would trip UBSan's vptr check.
inline void hideForeignOptions(const llvm::cl::OptionCategory *keep) {
  if (keep)
    llvm::cl::HideUnrelatedOptions(
        llvm::ArrayRef<const llvm::cl::OptionCategory *>(keep));
  else
    llvm::cl::HideUnrelatedOptions(
        llvm::ArrayRef<const llvm::cl::OptionCategory *>());
}

/// `--version` prints "TOOL (Tessera X.Y.Z; LLVM/MLIR A.B.C)".
inline void setVersionPrinter(llvm::StringRef tool) {
  static std::string name;
  name = tool.str();
  llvm::cl::SetVersionPrinter([](llvm::raw_ostream &os) {
    os << name << " (Tessera " << TESSERA_VERSION << "; LLVM/MLIR "
       << LLVM_VERSION_STRING << ")\n";
  });
}

} // namespace tessera

#endif // TESSERA_SUPPORT_TOOLOPTIONS_H
