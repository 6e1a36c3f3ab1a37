"""Padding-free attention: several sequences packed into one row, each attending only to itself.

A packed row carries ``position_ids`` that restart at 0 for every sequence and ``cu_seq_lens_q``, the
cumulative sequence boundaries (``[0, len_1, len_1 + len_2, ...]``), which transformers passes through
to every attention layer. :func:`varlen_attention` is registered with transformers'
``AttentionInterface`` under :data:`NAME`: on a GPU in bf16/fp16 it calls torch's
``varlen_attn`` (FlashAttention over the boundaries); elsewhere it runs causal
``scaled_dot_product_attention`` on each sequence in turn. Either way no token is padding and no
attention score crosses two sequences. transformers builds no mask for an implementation it does not
know, so a model set to this one must be given packed rows (or one unpadded sequence) only.

Packed *pairs* go further: a pair's prompt is laid down once, followed by its chosen and then its
rejected response (``prefloop_pairs``: each pair's start and prompt, chosen and rejected lengths).
The prompt and the chosen response form one causal sequence; the rejected response attends to the
prompt and causally to itself, never to the chosen one, with positions continuing from the prompt.
Each response thus sees exactly what it sees in its own row, and the prompt is computed once for
both (prompts are often the longer part of a pair).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

NAME = "prefloop_varlen"


def varlen_attention(
    module: Any,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    cu_seq_lens_q: Tensor | None = None,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """transformers' attention signature: ``query`` [1, Hq, N, D], ``key``/``value`` [1, Hkv, N, D];
    returns [1, N, Hq, D]. Without ``cu_seq_lens_q`` the row is one causal sequence."""
    if attention_mask is not None or query.shape[0] != 1:
        raise ValueError("varlen attention takes packed rows (batch 1, no padding mask)")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    pairs = kwargs.get("prefloop_pairs")
    if pairs is None:  # packed rows: each a sequence with nothing after it (a "pair" with no rejected part)
        bounds = cu_seq_lens_q.tolist() if cu_seq_lens_q is not None else [0, query.shape[2]]
        pairs = [(s, e - s, 0, 0) for s, e in itertools.pairwise(bounds) if e > s]
    if query.is_cuda and query.dtype in (torch.bfloat16, torch.float16):
        return _pairs_flash(query, key, value, pairs, scale), None
    return _pairs_attention(module, query, key, value, pairs, scale, dropout), None


def _ranges(spans: list[tuple[int, int]], device: torch.device) -> tuple[Tensor, Tensor, int]:
    """Token indices of ``(start, length)`` spans, their cumulative boundaries, the longest."""
    index = torch.cat([torch.arange(s, s + n) for s, n in spans]).to(device)
    lengths = torch.tensor([0] + [n for _, n in spans])
    return index, lengths.cumsum(0).to(device=device, dtype=torch.int32), max(n for _, n in spans)


def _pairs_flash(
    query: Tensor, key: Tensor, value: Tensor, pairs: list[tuple[int, int, int, int]], scale: float
) -> Tensor:
    """:func:`_pairs_attention` with two ``varlen_attn`` calls: prompt + chosen sequences, then the
    rejected responses against prompt + rejected keys (FlashAttention aligns causality bottom-right,
    so each rejected query sees the whole prompt)."""
    from torch.nn.attention.varlen import varlen_attn as _varlen

    def varlen_attn(*args: Any, **kw: Any) -> Tensor:
        out = _varlen(*args, **kw)
        assert isinstance(out, Tensor)
        return out

    q, k, v = (t[0].transpose(0, 1) for t in (query, key, value))  # [N, H, D]
    gqa = q.shape[1] != k.shape[1]
    first, cu_first, longest_first = _ranges([(s, p + c) for s, p, c, _ in pairs], q.device)
    out = torch.zeros_like(q).index_copy(
        0,
        first,
        varlen_attn(q[first], k[first], v[first], cu_first, cu_first, longest_first, longest_first,
                    scale=scale, window_size=(-1, 0), enable_gqa=gqa),
    )  # fmt: skip
    with_rejected = [(s, p, c, r) for s, p, c, r in pairs if r]
    if with_rejected:
        rq, cu_q, longest_q = _ranges([(s + p + c, r) for s, p, c, r in with_rejected], q.device)
        rk, _, _ = _ranges(
            [span for s, p, c, r in with_rejected for span in ((s, p), (s + p + c, r))], q.device
        )
        kv_lengths = torch.tensor([0] + [p + r for _, p, _, r in with_rejected])
        cu_k = kv_lengths.cumsum(0).to(device=q.device, dtype=torch.int32)
        longest_k = int(kv_lengths.max())
        rejected = varlen_attn(q[rq], k[rk], v[rk], cu_q, cu_k, longest_q, longest_k, scale=scale,
                               window_size=(-1, 0), enable_gqa=gqa)  # fmt: skip
        out = out.index_copy(0, rq, rejected)
    return out.unsqueeze(0)


def _pairs_attention(
    module: Any,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    pairs: list[tuple[int, int, int, int]],
    scale: float,
    dropout: float,
) -> Tensor:
    """Attention over packed pairs ``(start, prompt, chosen, rejected)`` (packed rows are pairs with
    nothing rejected); [1, N, Hq, D]."""
    gqa = query.shape[1] != key.shape[1]
    drop = dropout if module.training else 0.0
    parts = []
    for start, p, c, r in pairs:
        first = slice(start, start + p + c)  # prompt + chosen: one causal sequence
        parts.append(
            F.scaled_dot_product_attention(
                query[:, :, first], key[:, :, first], value[:, :, first], is_causal=True, scale=scale,
                dropout_p=drop, enable_gqa=gqa,
            )
        )  # fmt: skip
        if r:
            rejected = slice(start + p + c, start + p + c + r)
            k = torch.cat([key[:, :, start : start + p], key[:, :, rejected]], dim=2)
            v = torch.cat([value[:, :, start : start + p], value[:, :, rejected]], dim=2)
            # query i of the rejected response sees the whole prompt and rejected tokens 0..i
            seen = (
                torch.arange(p + r, device=query.device)[None, :]
                <= p + torch.arange(r, device=query.device)[:, None]
            )
            parts.append(
                F.scaled_dot_product_attention(
                    query[:, :, rejected], k, v, attn_mask=seen, scale=scale, dropout_p=drop, enable_gqa=gqa
                )
            )
    return torch.cat(parts, dim=2).transpose(1, 2).contiguous()


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
