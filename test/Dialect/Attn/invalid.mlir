// RUN: attn-opt %s -split-input-file -verify-diagnostics
//
// Every user-facing error of the attn dialect: malformed attributes, shapes
// and head assignments. Each names the problem at the attribute or op.
attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'window' parameter 'before' must be in [0, 1099511627776], got -1}}
    attn.heads [0] = #attn.window<before = -1>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'window' parameter 'after' must be in [0, 1099511627776], got 1099511627777}}
    attn.heads [0] = #attn.window<after = 1099511627777>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+2 {{integer value too large}}
    // expected-error @+1 {{failed to parse Attn_WindowAttr parameter 'before'}}
    attn.heads [0] = #attn.window<before = 99999999999999999999999>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{duplicate or unknown struct parameter name: befor}}
    attn.heads [0] = #attn.window<befor = 3>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'sink' parameter 'count' must be in [1, 1099511627776], got 0}}
    attn.heads [0] = #attn.sink<0>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'a_shape' parameter 'sink' must be in [1, 1099511627776], got 0}}
    attn.heads [0] = #attn.a_shape<sink = 0, before = 4>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{struct is missing required parameter: before}}
    attn.heads [0] = #attn.a_shape<sink = 4>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'a_shape' parameter 'before' must be in [0, 1099511627776], got -2}}
    attn.heads [0] = #attn.a_shape<sink = 4, before = -2>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'multi_diagonal' needs exactly one of 'stride' or 'offsets'}}
    attn.heads [0] = #attn.multi_diagonal<stride = 8, offsets = [0], width = 1>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'multi_diagonal' needs exactly one of 'stride' or 'offsets'}}
    attn.heads [0] = #attn.multi_diagonal<width = 1>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'multi_diagonal' parameter 'stride' must be in [1, 1099511627776], got -8}}
    attn.heads [0] = #attn.multi_diagonal<stride = -8>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'multi_diagonal' parameter 'width' must be in [0, 1099511627776], got -1}}
    attn.heads [0] = #attn.multi_diagonal<stride = 8, width = -1>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'multi_diagonal' offsets must be strictly increasing, got 4 then 0}}
    attn.heads [0] = #attn.multi_diagonal<offsets = [4, 0]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'multi_diagonal' offsets must be strictly increasing, got 0 then 0}}
    attn.heads [0] = #attn.multi_diagonal<offsets = [0, 0]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'multi_diagonal' parameter 'offsets' holds -1099511627777, outside [-1099511627776, 1099511627776]}}
    attn.heads [0] = #attn.multi_diagonal<offsets = [-1099511627777]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_stripe' needs exactly one of 'ranges' or 'period'/'width'/'phase'}}
    attn.heads [0] = #attn.vertical_stripe<ranges = [0, 4], period = 8, width = 1>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_stripe' needs exactly one of 'ranges' or 'period'/'width'/'phase'}}
    attn.heads [0] = #attn.vertical_stripe<>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_stripe' ranges must hold [begin, end) pairs, got 3 values}}
    attn.heads [0] = #attn.vertical_stripe<ranges = [0, 4, 8]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_stripe' range 0 [4, 4) is empty}}
    attn.heads [0] = #attn.vertical_stripe<ranges = [4, 4]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_stripe' range 1 overlaps or precedes the range before it}}
    attn.heads [0] = #attn.vertical_stripe<ranges = [0, 8, 4, 12]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_stripe' parameter 'ranges' holds -4, outside [0, 1099511627776]}}
    attn.heads [0] = #attn.vertical_stripe<ranges = [-4, 2]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_stripe' width 9 exceeds its period 8}}
    attn.heads [0] = #attn.vertical_stripe<period = 8, width = 9>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_stripe' parameter 'width' must be in [1, 1099511627776], got 0}}
    attn.heads [0] = #attn.vertical_stripe<period = 8, width = 0, phase = 1>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_stripe' phase must be in [0, 8), got 8}}
    attn.heads [0] = #attn.vertical_stripe<period = 8, width = 2, phase = 8>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_stripe' needs exactly one of 'ranges' or 'period'/'width'/'phase'}}
    attn.heads [0] = #attn.vertical_stripe<ranges = []>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'horizontal_stripe' ranges must hold [begin, end) pairs, got 1 values}}
    attn.heads [0] = #attn.horizontal_stripe<ranges = [3]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'horizontal_stripe' parameter 'period' must be in [1, 1099511627776], got 0}}
    attn.heads [0] = #attn.horizontal_stripe<period = 0, width = 1>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'grid' parameter 'stride' must be in [1, 1099511627776], got 0}}
    attn.heads [0] = #attn.grid<stride = 0, vertical_width = 1>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'grid' needs a non-zero vertical_width or slash_width}}
    attn.heads [0] = #attn.grid<stride = 8>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'grid' line widths must not exceed the stride 8}}
    attn.heads [0] = #attn.grid<stride = 8, slash_width = 9>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'grid' phase must be in [0, 8), got -1}}
    attn.heads [0] = #attn.grid<stride = 8, vertical_width = 1, phase = -1>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'strided_shards' parameter 'shards' must be in [1, 1099511627776], got 0}}
    attn.heads [0] = #attn.strided_shards<shards = 0>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'strided_shards' parameter 'block' must be in [1, 1099511627776], got 0}}
    attn.heads [0] = #attn.strided_shards<shards = 4, block = 0>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'strided_shards' offset must be in [0, 4), got 4}}
    attn.heads [0] = #attn.strided_shards<shards = 4, offset = 4>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'shifted_groups' parameter 'size' must be in [1, 1099511627776], got 0}}
    attn.heads [0] = #attn.shifted_groups<size = 0, shift = 0>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'shifted_groups' shift must be in [0, 8), got 8}}
    attn.heads [0] = #attn.shifted_groups<size = 8, shift = 8>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_sparse' parameter 'block_q' must be in [1, 1099511627776], got 0}}
    attn.heads [0] = #attn.block_sparse<block_q = 0, block_k = 64, blocks = [0, 0]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_sparse' parameter 'block_k' must be in [1, 1099511627776], got -64}}
    attn.heads [0] = #attn.block_sparse<block_q = 64, block_k = -64, blocks = [0, 0]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_sparse' blocks must hold (query block, key block) pairs, got 3 values}}
    attn.heads [0] = #attn.block_sparse<block_q = 64, block_k = 64, blocks = [0, 0, 1]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_sparse' parameter 'blocks' holds -1, outside [0, 1099511627776]}}
    attn.heads [0] = #attn.block_sparse<block_q = 64, block_k = 64, blocks = [0, -1]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_sparse' lists block (1, 2) twice}}
    attn.heads [0] = #attn.block_sparse<block_q = 64, block_k = 64, blocks = [1, 2, 0, 0, 1, 2]>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'union' needs at least two patterns, got 1}}
    attn.heads [0] = #attn.union<#attn.causal>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'intersect' needs at least two patterns, got 1}}
    attn.heads [0] = #attn.intersect<#attn.causal>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{expected an attention pattern, got 4 : i64}}
    attn.heads [0] = #attn.union<#attn.causal, 4 : i64>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{expected ','}}
    attn.heads [0] = #attn.difference<#attn.causal>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{unknown attribute `nonsense` in dialect `attn`}}
    attn.heads [0] = #attn.nonsense
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{unbalanced '<' character in pretty dialect name}}
    attn.heads [0] = #attn.window<before = 4
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op index must be in [0, 1099511627776], got -1}}
  attn.layer -1 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op heads must be in [1, 4096], got 0}}
  attn.layer 0 heads = 0 kv_heads = 1 head_dim = 64 dtype = bf16 {

  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op heads must be in [1, 4096], got 5000}}
  attn.layer 0 heads = 5000 kv_heads = 1 head_dim = 64 dtype = bf16 {

  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op kv_heads must be in [1, heads = 1], got 0}}
  attn.layer 0 heads = 1 kv_heads = 0 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op kv_heads must be in [1, heads = 2], got 4}}
  attn.layer 0 heads = 2 kv_heads = 4 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op heads (6) must be a multiple of kv_heads (4) for grouped-query attention}}
  attn.layer 0 heads = 6 kv_heads = 4 head_dim = 64 dtype = bf16 {
    attn.heads [0, 1, 2, 3, 4, 5] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op head_dim must be in [1, 1024], got 0}}
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 0 dtype = bf16 {
    attn.heads [0] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op head_dim must be in [1, 1024], got 2048}}
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 2048 dtype = bf16 {
    attn.heads [0] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op dtype must be f16, bf16 or f32, got 'i32'}}
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = i32 {
    attn.heads [0] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op heads 1, 3 have no pattern}}
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0, 2] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op head 0 has no pattern}}
  attn.layer 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [1] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.layer' op heads 1, 2, 3, 4, 5, 6, 7, 8 and 11 more have no pattern}}
  attn.layer 0 heads = 20 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'attn.heads' op head 1 is out of range for a layer of 1 heads}}
    attn.heads [0, 1] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'attn.heads' op head -1 is out of range for a layer of 1 heads}}
    attn.heads [-1] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'attn.heads' op head 0 is assigned more than one pattern}}
    attn.heads [0, 0] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-note @+1 {{first assigned here}}
    attn.heads [0, 1] = #attn.causal
    // expected-error @+1 {{'attn.heads' op head 1 is assigned more than one pattern}}
    attn.heads [1] = #attn.dense
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'attn.heads' op needs at least one head}}
    attn.heads [] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{custom op 'attn.heads' invalid kind of attribute specified}}
    attn.heads [0] = 4 : i64
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.causal
    // expected-error @+1 {{'builtin.module' op is not allowed in 'attn.layer'; only 'attn.heads' ops are}}
    builtin.module {
    }
  }
}

// -----

attn.model @m {
  // expected-note @+1 {{first used here}}
  attn.layer 3 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.causal
  }
  // expected-error @+1 {{'attn.layer' op index 3 is used by another layer}}
  attn.layer 3 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.causal
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'attn.heads' op expects parent op 'attn.layer'}}
  attn.heads [0] = #attn.causal
}

// -----

// expected-error @+1 {{'attn.layer' op expects parent op 'attn.model'}}
attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
  attn.heads [0] = #attn.causal
}

// -----

attn.model @m {
  // expected-error @+1 {{custom op 'attn.layer' expected 'heads'}}
  attn.layer 0 kv_heads = 1 head_dim = 64 dtype = bf16 {
  }
}

// -----

attn.model @m {
  // expected-error @+1 {{'builtin.module' op is not allowed in 'attn.model'; only 'attn.layer' and 'attn.schedule' ops are}}
  builtin.module {
  }
}

// -----

// The generic form is verified the same way.
"attn.model"() <{sym_name = "m"}> ({
  // expected-error @+1 {{'attn.layer' op requires attribute 'dtype'}}
  "attn.layer"() <{index = 0 : i64, num_heads = 1 : i64, num_kv_heads = 1 : i64, head_dim = 64 : i64}> ({
  }) : () -> ()
}) : () -> ()

// -----

attn.model @m {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{head range 3 to 1 is empty; write the smaller head first}}
    attn.heads [0, 3 to 1] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{head list names more than 4096 heads}}
    attn.heads [0 to 1099511627776] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{head list names more than 4096 heads}}
    attn.heads [-9223372036854775808 to 9223372036854775807] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-note @+1 {{first assigned here}}
    attn.heads [0 to 2] = #attn.causal
    // expected-error @+1 {{head 2 is assigned more than one pattern}}
    attn.heads [2 to 3] = #attn.dense
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 4 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{expected integer value}}
    attn.heads [0 to] = #attn.causal
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_slash' parameter 'last_q' must be in [1, 1099511627776], got 0}}
    attn.heads [0] = #attn.vertical_slash<last_q = 0, vertical = 10>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_slash' keeps nothing: give 'vertical', 'slash', 'first_columns' or 'last_diagonals'}}
    attn.heads [0] = #attn.vertical_slash<last_q = 64>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'vertical_slash' parameter 'vertical' must be in [0, 1099511627776], got -1}}
    attn.heads [0] = #attn.vertical_slash<last_q = 64, vertical = -1, slash = 5>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_topk' needs exactly one of 'gamma' (a coverage in (0, 1]) and 'top_k' (a count)}}
    attn.heads [0] = #attn.block_topk<block = 64>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_topk' needs exactly one of 'gamma' (a coverage in (0, 1]) and 'top_k' (a count)}}
    attn.heads [0] = #attn.block_topk<block = 64, gamma = 0.5, top_k = 3>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_topk' parameter 'gamma' must be in (0, 1], got 1.5}}
    attn.heads [0] = #attn.block_topk<block = 64, gamma = 1.5>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_topk' needs exactly one of 'gamma' (a coverage in (0, 1]) and 'top_k' (a count)}}
    attn.heads [0] = #attn.block_topk<block = 64, gamma = -0.5>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_topk' parameter 'block' must be in [1, 1024], got 0}}
    attn.heads [0] = #attn.block_topk<block = 0, top_k = 3>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_topk' takes 'tau' (FlexPrefill's choice) only with 'gamma'}}
    attn.heads [0] = #attn.block_topk<block = 64, top_k = 3, tau = 0.1>
  }
}

// -----

// top_k keeps exactly top_k blocks: a clamp beside it would be ignored.
attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_topk' takes 'min_blocks' and 'max_blocks' only with 'gamma' ('top_k' keeps exactly top_k blocks)}}
    attn.heads [0] = #attn.block_topk<block = 64, top_k = 3, min_blocks = 2>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_topk' takes 'min_blocks' and 'max_blocks' only with 'gamma' ('top_k' keeps exactly top_k blocks)}}
    attn.heads [0] = #attn.block_topk<block = 64, top_k = 3, max_blocks = 8>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_topk' parameter 'tau' must be in [0, 1], got 2}}
    attn.heads [0] = #attn.block_topk<block = 64, gamma = 0.9, tau = 2.0>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'block_topk' min_blocks 9 exceeds max_blocks 4}}
    attn.heads [0] = #attn.block_topk<block = 64, gamma = 0.9, min_blocks = 9, max_blocks = 4>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'routing' parameter 'clusters' must be in [1, 65536], got 0}}
    attn.heads [0] = #attn.routing<clusters = 0>
  }
}

// -----

attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'routing' parameter 'kmeans_iterations' must be in [0, 100], got 101}}
    attn.heads [0] = #attn.routing<clusters = 4, kmeans_iterations = 101>
  }
}

// -----

// k-means' work per key is bounded (65536 x 100 took minutes at 4096 tokens).
attn.model @m {
  attn.layer 0 heads = 1 kv_heads = 1 head_dim = 64 dtype = bf16 {
    // expected-error @+1 {{'routing' clusters x kmeans_iterations must be at most 65536 (k-means' work per key), got 65536 x 100}}
    attn.heads [0] = #attn.routing<clusters = 65536, kmeans_iterations = 100>
  }
}

// -----

// At the bound: accepted.
attn.model @m {
  attn.layer 0 heads = 2 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.routing<clusters = 655, kmeans_iterations = 100>
    attn.heads [1] = #attn.routing<clusters = 65536, kmeans_iterations = 1>
  }
}
