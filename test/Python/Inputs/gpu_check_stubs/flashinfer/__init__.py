"""A stand-in for flashinfer in test/Python/gpu-check.test: the call that
bench/gpu_check.py makes (single_prefill_with_kv_cache on [N, H, D], NHD
layout, GQA, causal), computed plainly."""
import flash_attn

__version__ = "test-stub"


def single_prefill_with_kv_cache(q, k, v, causal=False, kv_layout="NHD"):
    assert kv_layout == "NHD"
    return flash_attn.flash_attn_func(q[None], k[None], v[None],
                                      causal=causal)[0]
