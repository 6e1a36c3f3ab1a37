"""Per-token log-probs of the response tokens, without the full logits.

The vocabulary projection is the largest tensor of a step: batch × length × vocabulary floats (a
128k vocabulary at 8 × 2,048 tokens is 8 GiB in float32, and log-softmax keeps another). Here the
decoder's last hidden states are taken only at the positions that predict a response token, and
:class:`_LabelLogps` projects them onto the vocabulary a chunk of rows at a time, in float32 inside
the chunk only, keeping one log-sum-exp per position; its backward recomputes each chunk's logits.
Peak memory thus grows with the chunk, not with vocabulary × length.

Two ways in, one head: padded rows (``attention_mask``), or every row packed into one sequence
(``position_ids`` restarting per row, ``cu_seq_lens_q``: no compute on padding; attention.py). A model
whose head is not a plain linear map (a bias, logit soft-capping or scaling) goes through its own
forward instead, with the logits of the response positions only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.dpo.data import Batch

LOGIT_CHUNK_ELEMENTS = 2**24  # positions × vocabulary per chunk of the LM head: 64 MiB of float32
_HEAD_CHANGERS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


class _LabelLogps(torch.autograd.Function):
    """log softmax(hidden @ weightᵀ)[label] for each row, a chunk of rows at a time."""

    @staticmethod
    def forward(ctx: Any, hidden: Tensor, weight: Tensor, labels: Tensor, rows: int) -> Tensor:
        out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        lse = torch.empty_like(out)
        for s in range(0, hidden.shape[0], rows):
            logits = (hidden[s : s + rows] @ weight.T).float()
            lse[s : s + rows] = torch.logsumexp(logits, dim=-1)
            out[s : s + rows] = logits.gather(1, labels[s : s + rows, None]).squeeze(1) - lse[s : s + rows]
        ctx.save_for_backward(hidden, weight, labels, lse)
        ctx.rows = rows
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        hidden, weight, labels, lse = ctx.saved_tensors
        want_hidden, want_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_hidden = torch.empty_like(hidden) if want_hidden else None
        grad_weight = (
            torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if want_weight else None
        )
        for s in range(0, hidden.shape[0], ctx.rows):
            h, g = hidden[s : s + ctx.rows], grad[s : s + ctx.rows, None].float()
            # d/dlogits of log softmax[label] = onehot(label) - softmax
            d = torch.exp((h @ weight.T).float() - lse[s : s + ctx.rows, None]).mul_(-g)
            d.scatter_add_(1, labels[s : s + ctx.rows, None], g)
            if grad_hidden is not None:
                grad_hidden[s : s + ctx.rows] = d.to(weight.dtype) @ weight
            if grad_weight is not None:
                grad_weight.addmm_(d.T, h.float())
        return (
            grad_hidden,
            grad_weight.to(weight.dtype) if grad_weight is not None else None,
            None,
            None,
        )


def label_logps(hidden: Tensor, weight: Tensor, labels: Tensor) -> Tensor:
    """[M] float32 log-probs of ``labels`` [M] under ``hidden`` [M, H] projected by ``weight`` [V, H]."""
    rows = max(1, LOGIT_CHUNK_ELEMENTS // weight.shape[0])
    out = _LabelLogps.apply(hidden, weight, labels, rows)  # type: ignore[no-untyped-call]
    assert isinstance(out, Tensor)
    return out


def causal_of(model: Any) -> Any:
    """The transformers causal LM inside ``model`` (a PeftModel's, or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def _chunkable(causal: Any) -> bool:
    head = causal.get_output_embeddings()
    if not isinstance(head, nn.Linear) or head.bias is not None:
        return False
    return not any(getattr(causal.config, name, None) not in (None, 1, 1.0) for name in _HEAD_CHANGERS)


@dataclass
class Inputs:
    """One batch laid out for the model: the forward's keyword arguments, and where the response
    tokens are: ``select`` [M] positions (in the flattened [rows × length] layout) that predict one,
    ``labels`` [M] the token each predicts, ``owner`` [M] its row."""

    forward: dict[str, Any]
    select: Tensor
    labels: Tensor
    owner: Tensor
    rows: int

    def tokens(self) -> Tensor:
        """[rows] response tokens per row."""
        return torch.zeros(self.rows, device=self.owner.device).index_add_(
            0, self.owner, torch.ones_like(self.owner, dtype=torch.float32)
        )


def _pairs_inputs(batch: Batch) -> Inputs | None:
    """Every pair as prompt, chosen, rejected in one row (attention.py), each prompt once; None where
    a pair's rows do not share a non-empty prompt (then rows are packed as they are)."""
    rows = batch.input_ids.shape[0]
    half = rows // 2
    lengths = batch.attention_mask.sum(dim=1).tolist()
    prompts = batch.completion_mask.float().argmax(dim=1).tolist()  # each row's first response token
    device = batch.input_ids.device
    ids, positions, select, labels, owner = [], [], [], [], []
    pairs: list[tuple[int, int, int, int]] = []
    at = 0
    for i in range(half):
        p, c, r = prompts[i], lengths[i] - prompts[i], lengths[half + i] - prompts[i]
        if p < 1 or prompts[half + i] != p or c < 1 or r < 1:
            return None
        if not torch.equal(batch.input_ids[i, :p], batch.input_ids[half + i, :p]):
            return None  # not one prompt with two answers: pack the rows as they are
        chosen, rejected = batch.input_ids[i, : p + c], batch.input_ids[half + i, p : p + r]
        ids += [chosen, rejected]
        positions += [torch.arange(p + c, device=device), torch.arange(p, p + r, device=device)]
        # the prompt's last token predicts both first response tokens; each response predicts its rest
        select += [
            torch.arange(at + p - 1, at + p + c - 1, device=device),
            torch.tensor([at + p - 1], device=device),
            torch.arange(at + p + c, at + p + c + r - 1, device=device),
        ]
        labels += [chosen[p:], rejected]
        owner += [torch.full((c,), i, device=device), torch.full((r,), half + i, device=device)]
        pairs.append((at, p, c, r))
        at += p + c + r
    forward = {
        "input_ids": torch.cat(ids).unsqueeze(0),
        "position_ids": torch.cat(positions).unsqueeze(0),
        "prefloop_pairs": pairs,
    }
    return Inputs(forward, torch.cat(select), torch.cat(labels), torch.cat(owner), rows)


def batch_inputs(batch: Batch, *, packed: bool, share_prompt: bool = False) -> Inputs:
    """The model's inputs for ``batch`` (right-padded rows): padded, packed into one row, or packed
    as pairs with each prompt once (``share_prompt``)."""
    if packed and share_prompt and (shared := _pairs_inputs(batch)) is not None:
        return shared
    predicts = batch.completion_mask[:, 1:].bool()  # position t predicts token t+1, a response token
    owner, t = predicts.nonzero(as_tuple=True)
    labels = batch.input_ids[:, 1:][predicts]
    rows, width = batch.input_ids.shape
    if not packed:
        padded = {"input_ids": batch.input_ids, "attention_mask": batch.attention_mask}
        return Inputs(padded, owner * width + t, labels, owner, rows)
    lengths = batch.attention_mask.sum(dim=1)
    ends = lengths.cumsum(0)
    starts = ends - lengths
    present = batch.attention_mask.bool()
    positions = torch.arange(width, device=lengths.device).expand(rows, width)[present]
    forward: dict[str, Any] = {
        "input_ids": batch.input_ids[present].unsqueeze(0),
        "position_ids": positions.unsqueeze(0),
        "cu_seq_lens_q": torch.cat([ends.new_zeros(1), ends]),
    }
    return Inputs(forward, starts[owner] + t, labels, owner, rows)


class TokenLogps(nn.Module):
    """A causal LM that answers the log-prob of each response token, never the full logits.

    Wrapping the model in a module of its own is what lets DistributedDataParallel and FSDP see the
    whole computation (FSDP gathers the head's weight for this module's forward)."""

    def __init__(self, model: Any, *, packed: bool, share_prompt: bool = True) -> None:
        super().__init__()
        self.model = model  # registered: its parameters are this module's
        self.packed = packed
        self.share_prompt = share_prompt  # packed: each pair's prompt once, both responses after it
        causal = causal_of(model)
        self.chunked = _chunkable(causal)

    def forward(self, inputs: Inputs) -> Tensor:
        causal = causal_of(self.model)
        if self.chunked:
            decoder = getattr(causal, causal.base_model_prefix)
            hidden = decoder(**inputs.forward, use_cache=False).last_hidden_state
            picked = hidden.flatten(0, 1)[inputs.select]
            return label_logps(picked, causal.get_output_embeddings().weight, inputs.labels)
        return _full_logits_logps(causal, inputs)


def _full_logits_logps(causal: Any, inputs: Inputs) -> Tensor:
    """The model's own forward (its head as it is), logits kept at the response positions only."""
    if "position_ids" in inputs.forward:  # packed: one row, so positions index it directly
        logits = causal(**inputs.forward, use_cache=False, logits_to_keep=inputs.select).logits[0]
    else:
        logits = causal(**inputs.forward, use_cache=False).logits.flatten(0, 1)[inputs.select]
    return -F.cross_entropy(logits.float(), inputs.labels, reduction="none")


def sequence_logps(scorer: Any, batch: Batch) -> tuple[Tensor, Tensor]:
    """Summed log-probabilities of each row's response tokens, and how many there are; [2B] each.

    ``scorer`` is a :class:`TokenLogps` (or DDP/FSDP around one); prompt and padding tokens
    contribute nothing."""
    inner = scorer.module if hasattr(scorer, "module") else scorer
    inputs = batch_inputs(batch, packed=inner.packed, share_prompt=inner.share_prompt)
    per_token = scorer(inputs)
    summed = torch.zeros(inputs.rows, dtype=per_token.dtype, device=per_token.device)
    return summed.index_add(0, inputs.owner, per_token), inputs.tokens()


def sequence_logps_full_logits(model: Any, batch: Batch) -> tuple[Tensor, Tensor]:
    """The same sums computed the plain way: every position's logits through log-softmax in float32.
    What the chunked head is checked against (tests), and what it replaced."""
    first = max(1, int(batch.completion_mask.float().argmax(dim=1).min()))
    keep = batch.input_ids.shape[1] - first + 1
    logits = model(
        input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False, logits_to_keep=keep
    ).logits
    labels = batch.input_ids[:, first:]
    mask = batch.completion_mask[:, first:].float()
    per_token = -F.cross_entropy(logits[:, -keep:-1].float().transpose(1, 2), labels, reduction="none")
    return (per_token * mask).sum(dim=-1), mask.sum(dim=-1)


@torch.no_grad()
def dataset_logps(
    scorer: Any,
    batches: list[Batch],
    size: int,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
) -> Tensor:
    """[size, 2] summed (chosen, rejected) log-probs of every pair, in one no-grad pass;
    ``on_batch(done, total)`` after each batch."""
    out = torch.zeros(size, 2, dtype=torch.float32)
    was_training = scorer.training
    scorer.eval()
    for done, batch in enumerate(batches, start=1):
        logps, _ = sequence_logps(scorer, batch.to(device))
        chosen, rejected = logps.float().cpu().chunk(2)
        out[batch.index, 0], out[batch.index, 1] = chosen, rejected
        if on_batch is not None:
            on_batch(done, len(batches))
    scorer.train(was_training)
    return out
