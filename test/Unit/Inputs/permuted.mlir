// Head groups with layouts at small periods (PermutedApiTest, the permuted
// emulator and fake-driver tests): scheduled in 64 x 64 tiles and given
// their layouts by `attn-opt --attn-schedule --attn-permute="seq-len=512"`
// before attn-translate. GQA: three heads per kv head, so that a group
// spans several kv heads and a kv head serves several groups.
attn.model @permuted {
  attn.layer 0 heads = 12 kv_heads = 4 head_dim = 64 dtype = bf16 {
    attn.heads [0 to 3] = #attn.multi_diagonal<stride = 64, width = 8>
    attn.heads [4 to 6] = #attn.grid<stride = 64, vertical_width = 8, slash_width = 8>
    attn.heads [7 to 9] = #attn.union<#attn.vertical_stripe<ranges = [0, 32]>, #attn.horizontal_stripe<ranges = [0, 32]>, #attn.grid<stride = 64, vertical_width = 4, slash_width = 8, phase = 32>>
    attn.heads [10] = #attn.window<before = 32, after = 32>
    attn.heads [11] = #attn.skip
  }
}
