"""tessera.torch on the CPU: the custom op against SDPA with the boolean mask
attn-viz prints from the reference semantics, under torch.compile, and the
FlexAttention BlockMask export (its mask_mod against the same masks, its
blocks against the schedule, flex_attention's output against the op).

  torch_test.py BUNDLE_DIR PATTERN_FILE LAYER ATTN_VIZ
"""
import subprocess
import sys

import torch
import torch.nn.functional as F

import tessera
import tessera.torch as tt

bundle, pattern, layer, viz = sys.argv[1], sys.argv[2], int(sys.argv[3]), \
    sys.argv[4]
info = tessera.Context("cpu").load(bundle).layer_info(layer)
H, HKV, D = info["num_heads"], info["num_kv_heads"], info["head_dim"]
torch.manual_seed(0)


def reference_mask(nq, nk):
    """[H, Nq, Nk] bool from attn-viz (the reference semantics)."""
    masks = []
    for h in range(H):
        out = subprocess.run([viz, pattern, "--layer", str(layer), "--head",
                              str(h), "--q-len", str(nq), "--k-len", str(nk)],
                             check=True, stdout=subprocess.PIPE,
                             text=True).stdout.split()
        masks.append(torch.tensor([[c == "#" for c in r] for r in out]))
    return torch.stack(masks)


def sdpa(q, k, v, mask):
    """Masked attention in float64 through SDPA ([B, H, N, D] layout); rows
    with no allowed key give 0 (SDPA gives NaN there)."""
    qh, kh, vh = (x.double().transpose(1, 2) for x in (q, k, v))
    rep = H // HKV
    kh, vh = kh.repeat_interleave(rep, 1), vh.repeat_interleave(rep, 1)
    o = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=mask[None])
    o = torch.where(mask.any(-1)[None, :, :, None], o, torch.zeros_like(o))
    return o.transpose(1, 2)


failures = 0


def check(name, ok, detail=""):
    global failures
    print(f"{name}: {'ok' if ok else 'FAILED'} {detail}".rstrip())
    failures += 0 if ok else 1


for nq, nk in ((96, 96), (70, 130), (130, 70)):
    mask = reference_mask(nq, nk)
    q = torch.randn(2, nq, H, D)
    k = torch.randn(2, nk, HKV, D)
    v = torch.randn(2, nk, HKV, D)
    ref = sdpa(q, k, v, mask)
    o, lse = tt.attention(q, k, v, bundle, layer)
    err = (o.double() - ref).abs().max().item()
    check(f"op f32 {nq}x{nk} vs SDPA", err < 1e-4, f"(max error {err:.2e})")
    empty = ~mask.any(-1)                                   # [H, Nq]
    check(f"op {nq}x{nk} empty rows give 0 and -inf",
          bool((o.transpose(1, 2)[:, empty] == 0).all()) and
          bool(torch.isneginf(lse[:, empty]).all()),
          f"({int(empty.sum())} empty rows)")
    for dt, tol in ((torch.float16, 2e-2), (torch.bfloat16, 5e-2)):
        o16, _ = tt.attention(q.to(dt), k.to(dt), v.to(dt), bundle, layer)
        ref16 = sdpa(q.to(dt), k.to(dt), v.to(dt), mask)
        e = (o16.double() - ref16).abs().max().item()
        check(f"op {dt} {nq}x{nk}", o16.dtype == dt and e < tol,
              f"(max error {e:.2e})")

# torch.compile traces the op (fake implementation) without graph breaks.
q, k, v = torch.randn(1, 96, H, D), torch.randn(1, 96, HKV, D), \
    torch.randn(1, 96, HKV, D)


def model(q, k, v):
    o, _ = tt.attention(q * 2.0, k, v, bundle, layer)
    return o + 1.0


compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
check("torch.compile(fullgraph) matches eager",
      torch.allclose(compiled(q, k, v), model(q, k, v), atol=1e-6))
torch.library.opcheck(torch.ops.tessera.attention.default,
                      (q, k, v, bundle, layer, 0.0),
                      test_utils=("test_schema", "test_faketensor"))
check("opcheck schema and fake tensor", True)

# Transposed inputs, as transformers passes them ([B, H, N, D] tensors seen
# as [B, N, H, D]): the fake implementation's outputs have the real op's
# strides, so a view that eager allows also traces.
qt, kt, vt = (torch.randn(2, h, 80, D).transpose(1, 2)
              for h in (H, HKV, HKV))
real = tt.attention(qt, kt, vt, bundle, layer)
from torch._subclasses.fake_tensor import FakeTensorMode
with FakeTensorMode() as mode:
    fake = tt.attention(*(mode.from_tensor(x) for x in (qt, kt, vt)), bundle,
                        layer)
    check("fake strides equal the real op's on transposed inputs",
          [x.stride() for x in fake] == [x.stride() for x in real],
          f"(real {[x.stride() for x in real]}, "
          f"fake {[x.stride() for x in fake]})")
check("op on transposed inputs equals the op on contiguous copies",
      torch.equal(real[0], tt.attention(qt.contiguous(), kt.contiguous(),
                                        vt.contiguous(), bundle, layer)[0]))


def flat(q, k, v):
    o, _ = tt.attention(q, k, v, bundle, layer)
    return o.view(o.shape[0], o.shape[1], -1)


check("torch.compile(fullgraph) with a view of the transposed inputs' output",
      torch.equal(torch.compile(flat, fullgraph=True,
                                backend="aot_eager")(qt, kt, vt),
                  flat(qt, kt, vt)))
torch.library.opcheck(torch.ops.tessera.attention.default,
                      (qt, kt, vt, bundle, layer, 0.0))
check("opcheck on transposed inputs", True)

# FlexAttention: the mask_mod reproduces the reference masks exactly, the
# blocks are the schedule's, and flex_attention computes the op's output.
from torch.nn.attention.flex_attention import create_mask, flex_attention

for nq, nk, bs in ((256, 256, 64), (200, 328, 32), (328, 200, 128)):
    mask = reference_mask(nq, nk)
    dense = create_mask(tt.mask_mod(bundle, layer, nq, nk), 1, H, nq, nk,
                        device="cpu")[0]
    check(f"mask_mod {nq}x{nk} equals the reference masks",
          bool((dense == mask).all()),
          f"({int((dense != mask).sum())} pairs differ)")
    bm = tt.block_mask(bundle, layer, nq, nk, block_size=bs)
    cls = tt.tile_classes(bundle, layer, nq, nk, bs, bs)
    partial = int((cls == 1).sum())
    full = int((cls == 2).sum())
    check(f"block mask {nq}x{nk} / {bs}: the schedule's tiles",
          int(bm.kv_num_blocks.sum()) == partial and
          int(bm.full_kv_num_blocks.sum()) == full,
          f"({partial} partial, {full} full of {cls.numel()})")
    q = torch.randn(1, nq, H, D)
    k = torch.randn(1, nk, HKV, D)
    v = torch.randn(1, nk, HKV, D)
    o, _ = tt.attention(q, k, v, bundle, layer)
    of = flex_attention(q.transpose(1, 2), k.transpose(1, 2),
                        v.transpose(1, 2), block_mask=bm,
                        enable_gqa=H != HKV).transpose(1, 2)
    rows = mask.any(-1)                                     # Flex: NaN/0
    e = (o - of).transpose(1, 2)[0][rows].abs().max().item()
    check(f"flex_attention {nq}x{nk} with the exported BlockMask", e < 1e-4,
          f"(max error {e:.2e})")

# Bad input gets clear errors.
for name, call, kind in (
        ("3-d q", lambda: tt.attention(torch.randn(4, H, D), k, v, bundle,
                                       layer), ValueError),
        ("float64", lambda: tt.attention(q.double(), k.double(), v.double(),
                                         bundle, layer), TypeError),
        ("no bundle", lambda: tt.attention(q, k, v, "/nonexistent/bundle",
                                           layer), tessera.TesseraError),
        ("no layer", lambda: tt.block_mask(bundle, 99, 64, 64),
         (ValueError, tessera.TesseraError))):
    try:
        call()
        check(f"error for {name}", False, "(no error)")
    except kind as e:
        check(f"error for {name}", True, f"({type(e).__name__}: {e})")

print(f"{failures} failures")
sys.exit(1 if failures else 0)
