// RUN: attn-translate %s --emit=cuda | FileCheck %s
// RUN: attn-translate %s --emit=cuda | FileCheck %s --check-prefix=CLOSED

// Partial-tile masks: each static pattern gets P<id>Mask::rows (and keep,
// its u32 form), built from the closed form of each leaf of its runs
// (lib/Schedule/Masks.cpp, helpers in runtime/include/tessera/kernel/
// Masks.cuh), one comment per leaf naming its form. Row masks are 64-bit
// for the thread's rows p and p + 8 (row h's bit j + 1 + 2 h: key
// k0 + c2 + j); offsets are clamped 32-bit (t.kbc, t.dc) where the leaf's
// constants are below 2^29, 64-bit (t.kb, t.d) otherwise.

attn.model @masks {
  attn.layer 0 heads = 16 kv_heads = 1 head_dim = 64 dtype = bf16 {
    attn.heads [0] = #attn.causal
    attn.heads [1] = #attn.a_shape<sink = 64, before = 1024>
    attn.heads [2] = #attn.window<before = 1099511627776>
    attn.heads [3] = #attn.multi_diagonal<stride = 8, width = 1>
    attn.heads [4] = #attn.grid<stride = 1024, vertical_width = 64, slash_width = 64>
    attn.heads [5] = #attn.multi_diagonal<stride = 1099511627776, width = 32>
    attn.heads [6] = #attn.strided_shards<shards = 8, block = 64>
    attn.heads [7] = #attn.strided_shards<shards = 1099511627776, block = 1099511627776>
    attn.heads [8] = #attn.shifted_groups<size = 1024, shift = 512>
    attn.heads [9] = #attn.horizontal_stripe<period = 256, width = 16>
    attn.heads [10] = #attn.multi_diagonal<offsets = [-4096, -2048, -1024, 0, 1024, 2048], width = 16>
    attn.heads [11] = #attn.block_sparse<block_q = 32, block_k = 32, blocks = [0, 0, 1, 0, 1, 1]>
    attn.heads [12] = #attn.intersect<#attn.causal, #attn.union<#attn.window<before = 512>, #attn.strided_shards<shards = 8, block = 64>>>
    attn.heads [13] = #attn.difference<#attn.causal, #attn.sink<4>>
    attn.heads [14] = #attn.horizontal_stripe<ranges = [0, 16, 100, 116]>
    attn.heads [15] = #attn.dense
  }
}

// The helpers are pasted after the kernel body.
// CHECK: #ifndef TESSERA_KERNEL_MASKS_CUH
// CHECK: TESSERA_HD u32 threadBits(u64 row0, u64 row1) {

// Causal: one interval per row, its end from the clamped offset. rows
// leaves Nk's edge out (the kernels apply it to their last key tile);
// keep applies it (keepBits: t.edge).
// CHECK-LABEL: struct P0Mask {
// CHECK-NEXT: static TESSERA_HD RowMasks rows(const MaskTile &t, i64 head, i64 numHeads) {
// CHECK: // leaf 0: interval, keys [0, p]{{$}}
// CHECK-NEXT: const u64 [[C0:m[0-9]+]]_0 = bitRange(0, (1 - t.dc));
// CHECK-NEXT: const u64 [[C0]]_1 = bitRange(0, (11 - t.dc));
// CHECK-NEXT: return {[[C0]]_0, [[C0]]_1};
// CHECK: static TESSERA_HD u32 keep(i64 rowPos, i64 k0, int c2, i64 nk, i64 head, i64 numHeads) {
// CHECK-NEXT: const MaskTile t = maskTile(rowPos, k0, c2, nk);
// CHECK-NEXT: return keepBits(rows(t, head, numHeads), t);

// A-shape: two intervals (the sink's end is min(63, p)), united.
// CHECK-LABEL: struct P1Mask {
// CHECK: // leaf 0: interval, keys [0, min(63, p)]{{$}}
// CHECK-NEXT: bitRange(0, minInt((64 - t.kbc), (1 - t.dc)));
// CHECK: // leaf 1: interval, keys [p - 1024, p]{{$}}
// CHECK-NEXT: bitRange(((-1024) - t.dc), (1 - t.dc));
// CHECK: // union
// CHECK-NEXT: const u64 [[U:m[0-9]+]]_0 = [[A:m[0-9]+]]_0 | [[B:m[0-9]+]]_0;
// CHECK-NEXT: const u64 [[U]]_1 = [[A]]_1 | [[B]]_1;

// A window of 2^40: 64-bit offsets.
// CHECK-LABEL: struct P2Mask {
// CHECK: // leaf 0: interval, keys [p - 1099511627776, p], 64-bit{{$}}
// CHECK-NEXT: bitRange(clampBit64(((-1099511627776LL) - t.d)), clampBit64((1LL - t.d)));

// A period of at most 62: one phase per row (row 1's by a step; a power of
// two by its low bits), then a shifted constant.
// CHECK-LABEL: struct P3Mask {
// CHECK: // leaf 0: periodic, diagonals d with (d + 1) mod 8 < 3
// CHECK-NEXT: const int [[R:r[0-9]+]]_0 = (int)((u32)(t.d - (-1LL)) & 7u);
// CHECK-NEXT: const int [[R]]_1 = (int)(((u32)[[R]]_0 + 6) & 7u);
// CHECK-NEXT: periodicSmall(0x707070707070707ull, 0xe0e0e0e0e0e0e0eull, 64, [[R]]_0);

// Grid: vertical lines (one phase per thread, row 1's mask two bits up)
// and slash lines (per row); past 62, the two occurrences of the run that
// can meet the tile.
// CHECK-LABEL: struct P4Mask {
// CHECK: // leaf 0: periodic, keys k with k mod 1024 < 64
// CHECK-NEXT: const int [[K:r[0-9]+]]_0 = (int)((u32)(t.kb - 0LL) & 1023u);
// CHECK-NEXT: const u64 [[KM:m[0-9]+]]_0 = periodicRun(0xffffffffffffffffull, [[K]]_0, 1024);
// CHECK-NEXT: const u64 [[KM]]_1 = [[KM]]_0 << 2;
// CHECK: // leaf 1: periodic, diagonals d with (d + 63) mod 1024 < 64
// CHECK: (int)(((u32){{r[0-9]+}}_0 + 1014) & 1023u);
// CHECK: // union
// CHECK-NEXT: = [[KM]]_0 | {{m[0-9]+}}_0;

// CHECK-LABEL: struct P5Mask {
// CHECK: // leaf 0: periodic, diagonals d with (d + 32) mod 1099511627776 < 65, 64-bit
// CHECK-NEXT: const i64 [[R5:r[0-9]+]]_0 = (i64)((u64)(t.d - (-32LL)) & 0xffffffffffull);
// CHECK-NEXT: (i64)(((u64)[[R5]]_0 + 1099511627766LL) & 0xffffffffffull);
// CHECK-NEXT: periodicLarge64([[R5]]_0, 1099511627776LL, 65LL);

// Strided shards: a periodic key set with the head's phase; a period past
// 2^62 is the shard's one block.
// CHECK-LABEL: struct P6Mask {
// CHECK: // leaf 0: periodic, shards: block 64, shards 8, offset 0
// CHECK-NEXT: (int)((u32)(t.kb - (floorMod(head + 0LL, 8LL) * 64LL)) & 511u);
// CHECK-LABEL: struct P7Mask {
// CHECK: // leaf 0: interval, shards: block 1099511627776, shards 1099511627776, offset 0, one block, 64-bit
// CHECK-NEXT: mulSat(floorMod(head + 0LL, 1099511627776LL), 1099511627776LL);

// Shifted groups: the row's group from its phase, row 1 by a step.
// CHECK-LABEL: struct P8Mask {
// CHECK: // leaf 0: interval, shifted groups: size 1024, shift 512{{$}}
// CHECK-NEXT: const int [[G:g[0-9]+]]_0 = (int)((u32)(t.p - (head >= numHeads / 2 ? 512LL : 0LL)) & 1023u);
// CHECK-NEXT: const int [[G]]_1 = (int)(((u32)[[G]]_0 + 8) & 1023u);
// CHECK-NEXT: bitRange((0 - t.dc - [[G]]_0), (0 - t.dc - [[G]]_0) + 1024);

// Horizontal stripes: all or nothing per row.
// CHECK-LABEL: struct P9Mask {
// CHECK: // leaf 0: row, rows p with p mod 256 < 16
// CHECK: rowAll({{r[0-9]+}}_1 < 16);
// CHECK-NEXT: return {{[{]}}{{m[0-9]+}}_0, {{m[0-9]+}}_1};

// Diagonal bands (listed offsets, or a union of row-relative intervals)
// whose span is small: the offsets' bitmap in a table of 16-byte entries
// (entry m: bits [16 m, 16 m + 96); offset -4112 is bit 80, as 80 zero bits
// pad either end), row 1's index d - 10 less the base clamped to the
// table; one 128-bit load and four funnel shifts give both rows.
// CHECK: TESSERA_CONST OffsetEntry [[D10:P10Mask_d[0-9]+]][] = {{[{][{][{]}}0x0u, 0x0u, 0xffff0000u, 0x0u{{[}][}]}},
// CHECK-LABEL: struct P10Mask {
// CHECK: // leaf 0: listed, 6 diagonal ranges, offset table
// CHECK-NEXT: const RowMasks [[T10:t[0-9]+]] = offsetTableRows([[D10]], minInt(maxInt(t.dc - (-4182), 0), 6257));
// CHECK-NEXT: return {[[T10]].r0, [[T10]].r1};

// Listed blocks: a table of each listed query block's keys, 64 an entry
// of 96 bits, shifted up by 8 (keys 0-31, then keys 0-63); a row's mask is
// one entry, shifted.
// CHECK: TESSERA_CONST OffsetEntry P11Mask_d0[] = {{.}}{{.}}{{.}}0xffffff00u, 0xffu, 0x0u, 0x0u}}, {{.}}{{.}}0xffffff00u, 0xffffffffu, 0xffu, 0x0u}}};
// CHECK-LABEL: struct P11Mask {
// CHECK: // leaf 0: listed, blocks 32 x 32, 3 listed, tile table
// CHECK-NEXT: blockTableBits(P11Mask_d0, 2LL, 1LL, (t.p >> 5) - 0LL, t.tile, t.sh, t.off);

// Combinators: | & and & ~ of the leaves' masks.
// CHECK-LABEL: struct P12Mask {
// CHECK: // leaf 0: interval, keys [0, p]{{$}}
// CHECK: // leaf 1: interval, keys [p - 512, p]{{$}}
// CHECK: // leaf 2: periodic, shards: block 64, shards 8, offset 0
// CHECK: // union
// CHECK: // intersection
// CHECK-NEXT: = {{m[0-9]+}}_0 & {{m[0-9]+}}_0;
// CHECK-LABEL: struct P13Mask {
// CHECK: // leaf 0: interval, keys [0, p]{{$}}
// CHECK: // leaf 1: interval, keys [0, min(3, p)]{{$}}
// CHECK: // difference
// CHECK-NEXT: = {{m[0-9]+}}_0 & ~{{m[0-9]+}}_0;

// CHECK-LABEL: struct P14Mask {
// CHECK: // leaf 0: row, 2 row ranges
// CHECK-NEXT: rowAll((t.p >= 0LL && t.p < 16LL) || (t.p >= 100LL && t.p < 116LL));

// CHECK-LABEL: struct P15Mask {
// CHECK: // leaf 0: all, every key

// The kernels' dispatch (Groups*::keep, and keepNibbles, the form the
// kernel's selects read): a case per pattern.
// CHECK: u32 keep(i64 pattern, i64 rowPos, i64 k0, int c2, i64 nk, i64 head, i64 numHeads) {
// CHECK-NEXT: switch (pattern) {
// CHECK-NEXT: case 0:
// CHECK-NEXT: return P0Mask::keep(rowPos, k0, c2, nk, head, numHeads);
// CHECK: KeepNibbles keepNibbles(i64 pattern, i64 rowPos, i64 k0, int c2, int room, i64 head, i64 numHeads) {
// CHECK-NEXT: switch (pattern) {
// CHECK-NEXT: case 0:
// CHECK-NEXT: return rowNibbles(P0Mask::rows(maskTileRoom(rowPos, k0, c2, room), head, numHeads));
// CHECK: return P15Mask::keep(rowPos, k0, c2, nk, head, numHeads);

// No leaf falls back to the element predicate, and the former loop over it
// is gone from the dispatch.
// CLOSED-NOT: : predicate, element predicate
// CLOSED-NOT: keepBits<P
