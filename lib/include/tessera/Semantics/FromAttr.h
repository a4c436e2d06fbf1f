//===- FromAttr.h - pattern attributes to reference semantics ---*- C++ -*-===//

#ifndef TESSERA_SEMANTICS_FROMATTR_H
#define TESSERA_SEMANTICS_FROMATTR_H

#include "tessera/Dialect/Attn/AttnAttributes.h"
#include "tessera/Semantics/Pattern.h"

#include <string>

namespace tessera::semantics {

/// Translates a verified pattern attribute into its reference meaning.
Pattern fromAttr(attn::PatternAttrInterface attr);

/// A pattern with one dynamic leaf D, by Shannon expansion:
/// allowed = (D and with) or (not D and without), where `with` reads D as
/// dense and `without` reads it as skip. Both are static.
struct DynamicSplit {
  attn::PatternAttrInterface leaf;
  Pattern with, without;
  /// Whether the leaf is required: reached from the root through
  /// intersections and left sides of differences only, so that `without`
  /// allows nothing.
  bool required = false;
};

/// Splits `attr`; false (with `error` set) when it has no dynamic leaf or
/// more than one.
bool splitDynamic(attn::PatternAttrInterface attr, DynamicSplit &out,
                  std::string &error);

} // namespace tessera::semantics

#endif // TESSERA_SEMANTICS_FROMATTR_H
