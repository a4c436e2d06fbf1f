//===- AttnInterfaces.td - attn dialect interfaces ---------*- tablegen -*-===//

#ifndef TESSERA_DIALECT_ATTN_ATTNINTERFACES_TD
#define TESSERA_DIALECT_ATTN_ATTNINTERFACES_TD

include "mlir/IR/OpBase.td"

def Attn_PatternAttrInterface : AttrInterface<"PatternAttrInterface"> {
  let cppNamespace = "::tessera::attn";
  let description = [{
    Implemented by every attribute that describes an attention pattern: a set
    of allowed (query, key) pairs of one head. Patterns whose set depends on
    the head index report it, so that later stages do not share one schedule
    between heads that differ. Patterns whose set depends on runtime data
    (dynamic patterns: vertical-slash, block top-k, routing clusters, document
    ids) will report `isStatic() == false`; every pattern of this version is
    static.
  }];
  let methods = [
    InterfaceMethod<
      "Returns true when the allowed set depends on the head index.",
      "bool", "isHeadDependent", (ins), [{}], [{ return false; }]>,
    InterfaceMethod<
      "Returns true when the allowed set is fixed by the attribute alone "
      "(given the head and the sequence lengths).",
      "bool", "isStatic", (ins), [{}], [{ return true; }]>,
  ];
}

#endif // TESSERA_DIALECT_ATTN_ATTNINTERFACES_TD
