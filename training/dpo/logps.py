from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from training.dpo.data import Batch


def sequence_logps(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
    """Summed log-probabilities of each row's response tokens, and how many there are; [2B] each.

    Position t's logits predict token t+1, so the completion mask is shifted by one; prompt and
    padding tokens contribute nothing. Log-softmax runs in float32 whatever the model's dtype.
    """
    logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
    labels = batch.input_ids[:, 1:]
    mask = batch.completion_mask[:, 1:].float()
    per_token = -F.cross_entropy(logits[:, :-1].float().transpose(1, 2), labels, reduction="none")
    return (per_token * mask).sum(dim=-1), mask.sum(dim=-1)


@torch.no_grad()
def dataset_logps(model: nn.Module, batches: list[Batch], size: int, device: torch.device) -> Tensor:
    """[size, 2] summed (chosen, rejected) log-probs of every pair, in one no-grad pass."""
    out = torch.zeros(size, 2, dtype=torch.float32)
    was_training = model.training
    model.eval()
    for batch in batches:
        logps, _ = sequence_logps(model, batch.to(device))
        chosen, rejected = logps.float().cpu().chunk(2)
        out[batch.index, 0], out[batch.index, 1] = chosen, rejected
    model.train(was_training)
    return out
