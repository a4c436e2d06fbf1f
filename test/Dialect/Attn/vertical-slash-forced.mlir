// RUN: attn-opt %s | attn-opt | FileCheck %s
// RUN: rm -rf %t && attn-translate %s -o %t
// RUN: env PYTHONPATH=%tessera_src/python TESSERA_RUNTIME_LIB=%tessera_obj/lib/libtessera_runtime.so /usr/bin/python3 %S/Inputs/forced_only_bundle.py %t | FileCheck %s --check-prefix=RUNTIME
//
// A vertical-slash index of forced entries alone (vertical = slash = 0):
// the verifier accepts it, attn-translate emits it, and the runtime loads
// and runs it (its manifest reader refused it before): the first 4
// columns, whatever the input.

// CHECK: attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 1, first_columns = 4>>
attn.model @forced {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.intersect<#attn.causal, #attn.vertical_slash<last_q = 1, first_columns = 4>>
  }
}

// RUNTIME: forced columns alone: max error below 1e-5: True
