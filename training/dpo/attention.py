"""Padding-free attention: several sequences packed into one row, each attending only to itself.

A packed row carries ``position_ids`` that restart at 0 for every sequence and ``cu_seq_lens_q``, the
cumulative sequence boundaries (``[0, len_1, len_1 + len_2, ...]``), which transformers passes through
to every attention layer. :func:`varlen_attention` is registered with transformers'
``AttentionInterface`` under :data:`NAME`: on a GPU in bf16/fp16 it calls torch's
``varlen_attn`` (FlashAttention over the boundaries); elsewhere it runs causal
``scaled_dot_product_attention`` on each sequence in turn. Either way no token is padding and no
attention score crosses two sequences. transformers builds no mask for an implementation it does not
know, so a model set to this one must be given packed rows (or one unpadded sequence) only.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

NAME = "prefloop_varlen"


def _flash_varlen(
    query: Tensor, key: Tensor, value: Tensor, cu: Tensor, longest: int, scaling: float
) -> Tensor:
    from torch.nn.attention.varlen import varlen_attn

    # [1, H, N, D] -> [N, H, D]
    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))
    cu32 = cu.to(device=q.device, dtype=torch.int32)
    out = varlen_attn(
        q,
        k,
        v,
        cu32,
        cu32,
        longest,
        longest,
        scale=scaling,
        window_size=(-1, 0),
        enable_gqa=q.shape[1] != k.shape[1],
    )
    assert isinstance(out, Tensor)
    return out.unsqueeze(0)  # [1, N, H, D]


def varlen_attention(
    module: Any,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: Tensor | None = None,
    max_length_q: int | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' attention signature: ``query`` [1, Hq, N, D], ``key``/``value`` [1, Hkv, N, D];
    returns [1, N, Hq, D]. Without ``cu_seq_lens_q`` the row is one causal sequence."""
    if attention_mask is not None or query.shape[0] != 1:
        raise ValueError("varlen attention takes packed rows (batch 1, no padding mask)")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    n = query.shape[2]
    cu = cu_seq_lens_q if cu_seq_lens_q is not None else torch.tensor([0, n])
    gqa = query.shape[1] != key.shape[1]
    if query.is_cuda and query.dtype in (torch.bfloat16, torch.float16):
        return _flash_varlen(query, key, value, cu, int(max_length_q or n), scale), None
    bounds = cu.tolist()
    parts = [
        F.scaled_dot_product_attention(
            query[:, :, s:e],
            key[:, :, s:e],
            value[:, :, s:e],
            is_causal=True,
            scale=scale,
            dropout_p=dropout if module.training else 0.0,
            enable_gqa=gqa,
        )
        for s, e in itertools.pairwise(bounds)
        if e > s
    ]
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous(), None


def varlen_register() -> None:
    """Make :data:`NAME` known to transformers (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(NAME, varlen_attention)


def varlen_enable(model: Any) -> bool:
    """Switch ``model`` (a transformers causal LM) to packed attention; False where it cannot be
    (the architecture does not take a registered attention function), and the model is unchanged."""
    varlen_register()
    if not getattr(model, "_supports_attention_backend", False):
        return False
    try:
        model.set_attn_implementation(NAME)
    except (ValueError, ImportError, NotImplementedError):
        return False
    return bool(model.config._attn_implementation == NAME)
