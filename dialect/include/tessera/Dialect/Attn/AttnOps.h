//===- AttnOps.h - attn dialect operations ----------------------*- C++ -*-===//

#ifndef TESSERA_DIALECT_ATTN_ATTNOPS_H
#define TESSERA_DIALECT_ATTN_ATTNOPS_H

#include "mlir/Bytecode/BytecodeOpInterface.h"
#include "mlir/IR/BuiltinAttributes.h"
#include "mlir/IR/OpDefinition.h"
#include "mlir/IR/PatternMatch.h"
#include "mlir/IR/SymbolTable.h"

#include "tessera/Dialect/Attn/AttnAttributes.h"
#include "tessera/Dialect/Attn/AttnDialect.h"

#define GET_OP_CLASSES
#include "tessera/Dialect/Attn/AttnOps.h.inc"

#endif // TESSERA_DIALECT_ATTN_ATTNOPS_H
