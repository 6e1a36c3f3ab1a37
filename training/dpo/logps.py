from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from training.dpo.data import Batch


def sequence_logps(model: Any, batch: Batch) -> tuple[Tensor, Tensor]:
    """Summed log-probabilities of each row's response tokens, and how many there are; [2B] each.

    Position t's logits predict token t+1, so the completion mask is shifted by one; prompt and
    padding tokens contribute nothing. Only positions from the batch's earliest response token on
    go through the LM head (``logits_to_keep``): the vocabulary projection is the largest tensor
    of the step, and prompt positions would be thrown away. Log-softmax runs in float32.
    """
    # the earliest response token of any row (position 0 has no context to be predicted from)
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
    model: Any,
    batches: list[Batch],
    size: int,
    device: torch.device,
    on_batch: Callable[[int, int], None] | None = None,
) -> Tensor:
    """[size, 2] summed (chosen, rejected) log-probs of every pair, in one no-grad pass;
    ``on_batch(done, total)`` after each batch."""
    out = torch.zeros(size, 2, dtype=torch.float32)
    was_training = model.training
    model.eval()
    for done, batch in enumerate(batches, start=1):
        logps, _ = sequence_logps(model, batch.to(device))
        chosen, rejected = logps.float().cpu().chunk(2)
        out[batch.index, 0], out[batch.index, 1] = chosen, rejected
        if on_batch is not None:
            on_batch(done, len(batches))
    model.train(was_training)
    return out
