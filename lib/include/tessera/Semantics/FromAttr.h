//===- FromAttr.h - pattern attributes to reference semantics ---*- C++ -*-===//

#ifndef TESSERA_SEMANTICS_FROMATTR_H
#define TESSERA_SEMANTICS_FROMATTR_H

#include "tessera/Dialect/Attn/AttnAttributes.h"
#include "tessera/Semantics/Pattern.h"

namespace tessera::semantics {

/// Translates a verified pattern attribute into its reference meaning.
Pattern fromAttr(attn::PatternAttrInterface attr);

} // namespace tessera::semantics

#endif // TESSERA_SEMANTICS_FROMATTR_H
