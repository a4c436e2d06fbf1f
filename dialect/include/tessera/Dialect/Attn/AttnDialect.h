//===- AttnDialect.h - the attn dialect -------------------------*- C++ -*-===//

#ifndef TESSERA_DIALECT_ATTN_ATTNDIALECT_H
#define TESSERA_DIALECT_ATTN_ATTNDIALECT_H

#include "mlir/IR/Dialect.h"

#include "tessera/Dialect/Attn/AttnDialect.h.inc"

#endif // TESSERA_DIALECT_ATTN_ATTNDIALECT_H
