//===- AttnAttributes.h - attn pattern attributes ---------------*- C++ -*-===//

#ifndef TESSERA_DIALECT_ATTN_ATTNATTRIBUTES_H
#define TESSERA_DIALECT_ATTN_ATTNATTRIBUTES_H

#include "mlir/IR/Attributes.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/DialectImplementation.h"

#include "tessera/Dialect/Attn/AttnInterfaces.h.inc"

namespace tessera::attn {

/// The largest sequence length, offset or size a pattern may name (2^40).
/// Every index computation of the reference semantics stays within int64_t
/// for parameters and lengths up to this bound.
inline constexpr int64_t kMaxExtent = int64_t(1) << 40;

/// The most kept ranges a `#attn.period_transpose` holds (its `kept` list:
/// text segments kept before the transposed frames). The runtime's
/// layout::kMaxKeptRanges is the same bound (checked where both are seen).
inline constexpr int64_t kMaxKeptRanges = 64;

/// Parses `[a, b, c]` (possibly empty) for list parameters.
mlir::FailureOr<llvm::SmallVector<int64_t>> parseI64List(mlir::AsmParser &p);
/// Prints `[a, b, c]`.
void printI64List(mlir::AsmPrinter &p, llvm::ArrayRef<int64_t> values);

/// A real-valued attribute parameter (a double that attribute storage can
/// compare and hash).
struct Real {
  double value = 0;
  bool operator==(const Real &o) const { return value == o.value; }
  bool operator!=(const Real &o) const { return value != o.value; }
};
inline llvm::hash_code hash_value(Real r) {
  return llvm::hash_value(llvm::bit_cast<uint64_t>(r.value));
}

/// A finite real number written as a decimal; printed in the shortest form
/// that reads back to the same double.
mlir::FailureOr<Real> parseReal(mlir::AsmParser &p);
void printReal(mlir::AsmPrinter &p, Real value);

} // namespace tessera::attn

#define GET_ATTRDEF_CLASSES
#include "tessera/Dialect/Attn/AttnAttributes.h.inc"

namespace tessera::attn {

/// Returns a pattern that allows exactly the same (query, key, head) pairs as
/// `pattern` for every sequence length, rewritten by the algebraic rules of
/// docs/patterns.md (flattening, absorbing dense/skip, merging bands and
/// stripes, detecting A-shapes and empty sets). Returns `pattern` itself
/// when nothing applies.
PatternAttrInterface simplifyPattern(PatternAttrInterface pattern);

} // namespace tessera::attn

#endif // TESSERA_DIALECT_ATTN_ATTNATTRIBUTES_H
