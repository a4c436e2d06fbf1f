"""A stand-in for flash_attn in test/Python/gpu-check.test: the call that
bench/gpu_check.py makes (flash_attn_func on [B, N, H, D], GQA, causal),
computed plainly, so that its layout handling is checked on the CPU."""
import math

import torch

__version__ = "test-stub"


def flash_attn_func(q, k, v, causal=False):
    rep = q.shape[2] // k.shape[2]
    qh = q.transpose(1, 2).float()
    kh = k.transpose(1, 2).float().repeat_interleave(rep, 1)
    vh = v.transpose(1, 2).float().repeat_interleave(rep, 1)
    s = qh @ kh.transpose(-1, -2) / math.sqrt(q.shape[3])
    if causal:  # bottom-right aligned, as flash_attn's
        nq, nk = q.shape[1], k.shape[1]
        i = torch.arange(nq)[:, None] + (nk - nq)
        s = s.masked_fill(torch.arange(nk)[None, :] > i, float("-inf"))
    return (s.softmax(-1) @ vh).transpose(1, 2).to(q.dtype)
