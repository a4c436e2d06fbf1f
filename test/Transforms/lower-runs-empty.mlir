// RUN: attn-opt %s --attn-schedule --attn-lower-runs | FileCheck %s
// RUN: attn-opt %s --attn-schedule --attn-lower-runs | attn-opt | FileCheck %s
// RUN: attn-translate %s --emit=manifest | FileCheck %s --check-prefix=BUNDLE
//
// A pattern that allows nothing but is not written as skip (not
// canonicalized): its group's runs are an empty union, which visits no key
// block (this used to fail the verifier).

attn.model @empty {
  attn.layer 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.skip, #attn.window<before = 3>>
    attn.heads [1] = #attn.union<#attn.skip, #attn.window<before = 3>>
  }
}

// CHECK: attn.group 0 heads [0] = #attn.intersect<#attn.skip, #attn.window<before = 3>> runs {
// CHECK-NEXT: attn.run_union {
// CHECK-NEXT: }
// CHECK-NEXT: attn.run_transposed {
// CHECK-NEXT: attn.run_union {
// CHECK-NEXT: }
// CHECK-NEXT: }
// CHECK-NEXT: }
// CHECK-NEXT: attn.group 1 heads [1] = #attn.union<#attn.skip, #attn.window<before = 3>> runs {
// CHECK-NEXT: attn.run_interval keys [p0 - 3, p1]

// attn-translate canonicalizes first: head 0 is skipped.
// BUNDLE: "skipped_heads": [
// BUNDLE-NEXT: 0
