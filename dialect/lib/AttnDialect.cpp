//===- AttnDialect.cpp - the attn dialect ---------------------------------===//

#include "tessera/Dialect/Attn/AttnDialect.h"
#include "tessera/Dialect/Attn/AttnAttributes.h"
#include "tessera/Dialect/Attn/AttnOps.h"

#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace tessera::attn;

#include "tessera/Dialect/Attn/AttnDialect.cpp.inc"

void AttnDialect::initialize() {
  addOperations<
#define GET_OP_LIST
#include "tessera/Dialect/Attn/AttnOps.cpp.inc"
      >();
  registerAttributes();
}
