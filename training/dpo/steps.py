"""One optimizer step's work: log-probs of a micro-batch, the loss (pairs or unpaired examples),
the sums every metric is read from; the reference pass and the held-out evaluation."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from training.dpo import losses
from training.dpo.config import UNPAIRED, DPOConfig
from training.dpo.data import (
    Batch,
)
from training.dpo.logps import TokenLogps, dataset_logps, sequence_logps
from training.dpo.processes import Processes
from training.dpo.setup import TrainData, scorer_make

MetricsCallback = Callable[[dict[str, float]], None]
ProgressCallback = Callable[[str], None]  # a line on what the run is doing between steps
Model = Any  # a transformers PreTrainedModel, a peft PeftModel, or either wrapped in DDP


@dataclass
class PairLogps:
    """One micro-batch of pairs as a loss takes it, each [pairs]: the policy's summed log-probs of the
    chosen and rejected answers, their token counts, and (losses with a reference) the reference's."""

    chosen: Tensor
    rejected: Tensor
    chosen_tokens: Tensor
    rejected_tokens: Tensor
    ref_chosen: Tensor | None = None
    ref_rejected: Tensor | None = None
    smoothing: Tensor | None = None  # robust with confidence_smoothing: each pair's own label smoothing


def policy_side(cfg: DPOConfig, p: PairLogps) -> dict[str, Any]:
    return {"policy_chosen": p.chosen, "policy_rejected": p.rejected, "beta": cfg.beta}


def both_sides(cfg: DPOConfig, p: PairLogps) -> dict[str, Any]:
    assert p.ref_chosen is not None and p.ref_rejected is not None
    return {**policy_side(cfg, p), "ref_chosen": p.ref_chosen, "ref_rejected": p.ref_rejected}


def pair_lengths(p: PairLogps) -> dict[str, Any]:
    return {"chosen_tokens": p.chosen_tokens, "rejected_tokens": p.rejected_tokens}


PairLoss = Callable[[DPOConfig, PairLogps], tuple[Tensor, Tensor, Tensor]]

# The pair losses by name (losses.py, each from its paper): (per-pair loss, chosen rewards, rejected
# rewards). KTO and SFT train on single answers: ``unpaired_step``.
PAIR_LOSSES: dict[str, PairLoss] = {
    "sigmoid": lambda cfg, p: losses.dpo_sigmoid(**both_sides(cfg, p)),
    "robust": lambda cfg, p: losses.dpo_robust(
        **both_sides(cfg, p), label_smoothing=cfg.label_smoothing if p.smoothing is None else p.smoothing
    ),
    "hinge": lambda cfg, p: losses.dpo_hinge(**both_sides(cfg, p)),
    "ipo": lambda cfg, p: losses.dpo_ipo(**both_sides(cfg, p), **pair_lengths(p)),
    "dpop": lambda cfg, p: losses.dpo_positive(**both_sides(cfg, p), dpop_lambda=cfg.dpop_lambda),
    "simpo": lambda cfg, p: losses.simpo(**policy_side(cfg, p), **pair_lengths(p), gamma=cfg.simpo_gamma),
    "orpo": lambda cfg, p: losses.orpo(**policy_side(cfg, p), **pair_lengths(p)),
}


def pair_step(
    cfg: DPOConfig,
    logps: Tensor,
    tokens: Tensor,
    ref: Tensor | None,
    index: Tensor,
    smoothing: Tensor | None,
    share: float,
    device: torch.device,
) -> tuple[Tensor, list[float]]:
    """One micro-batch of pairs: the loss to backpropagate (weighted by its share of the step) and its
    sums for the step's metrics, in :func:`pair_metrics`'s order. RPO adds the chosen answer's
    per-token NLL to each pair's loss."""
    chosen, rejected = logps.chunk(2)
    chosen_tokens, rejected_tokens = tokens.chunk(2)
    pair = PairLogps(chosen, rejected, chosen_tokens, rejected_tokens)
    if ref is not None:
        pair.ref_chosen, pair.ref_rejected = ref[index].to(device).T.to(chosen.dtype).unbind(0)
    if smoothing is not None:
        pair.smoothing = smoothing[index].to(device, chosen.dtype)
    per_pair, chosen_rewards, rejected_rewards = PAIR_LOSSES[cfg.loss](cfg, pair)
    chosen_nll = -chosen / chosen_tokens.clamp(min=1)  # per token: RPO's anchor on the chosen answer
    if cfg.rpo_alpha:
        per_pair = per_pair + cfg.rpo_alpha * chosen_nll
    sums = [
        per_pair.detach().sum().item(),
        chosen_rewards.sum().item(),
        rejected_rewards.sum().item(),
        (chosen_rewards > rejected_rewards).float().sum().item(),
        (chosen_rewards - rejected_rewards).sum().item(),
        chosen.detach().sum().item(),
        rejected.detach().sum().item(),
        index.numel(),
        chosen_nll.detach().sum().item(),
    ]
    return per_pair.mean() * share, sums


def pair_metrics(totals: Tensor) -> dict[str, float]:
    """The step's metrics from :func:`pair_step`'s sums (all-reduced), TRL's names."""
    loss, chosen, rejected, accurate, margins, logps_chosen, logps_rejected, n, nll = totals[:9].tolist()
    return {
        "loss": loss / n,
        "rewards/chosen": chosen / n,
        "rewards/rejected": rejected / n,
        "rewards/accuracies": accurate / n,
        "rewards/margins": margins / n,
        "logps/chosen": logps_chosen / n,
        "logps/rejected": logps_rejected / n,
        "nll_loss": nll / n,  # the chosen answers' per-token NLL (TRL's name)
    }


def unpaired_step(
    cfg: DPOConfig,
    logps: Tensor,
    tokens: Tensor,
    ref: Tensor | None,
    index: Tensor,
    desirable: Tensor,
    share: float,
    group_tokens: int,
    world: int,
    device: torch.device,
) -> tuple[Tensor, list[float]]:
    """One micro-batch of KTO or SFT: the loss to backpropagate (already weighted for its group) and
    its sums for the step's metrics, in :func:`unpaired_metrics`'s order.

    KTO's rows are each answer and its KL partner (the same prompt, another answer of the batch);
    the KL estimate is averaged over every process, as TRL does. SFT's loss is the mean NLL per
    completion token over the whole group (gradient accumulation included)."""
    if cfg.loss == "sft":
        nll = -logps.sum()
        return nll / max(1, group_tokens), [nll.item(), tokens.sum().item(), index.numel(), 0, 0, 0, 0, 0, 0]
    assert ref is not None
    answer, partner = logps.chunk(2)
    ref_answer, ref_partner = ref[index].to(device).T.to(answer.dtype).unbind(0)
    kl = (partner - ref_partner).mean().detach()
    if world > 1:
        dist.all_reduce(kl)
        kl = kl / world
    labels = desirable[index].to(device)
    per_example, rewards = losses.kto(
        policy_logps=answer,
        ref_logps=ref_answer,
        desirable=labels,
        kl=kl,
        beta=cfg.beta,
        desirable_weight=cfg.desirable_weight,
        undesirable_weight=cfg.undesirable_weight,
    )
    good = labels.float()
    sums = [
        per_example.detach().sum().item(),
        0.0,
        index.numel(),
        good.sum().item(),
        (rewards * good).sum().item(),
        (rewards * (1 - good)).sum().item(),
        (answer.detach() * good).sum().item(),
        (answer.detach() * (1 - good)).sum().item(),
        kl.clamp(min=0).item(),
    ]
    return per_example.mean() * share, sums


def unpaired_metrics(cfg: DPOConfig, totals: Tensor, micro_batches: int, world: int) -> dict[str, float]:
    """The step's metrics from :func:`unpaired_step`'s sums (all-reduced), TRL's names."""
    loss, tokens, n, good, reward_good, reward_bad, logps_good, logps_bad, kl = totals[:9].tolist()
    if cfg.loss == "sft":
        return {"loss": loss / max(1.0, tokens), "num_tokens": tokens}
    bad = n - good
    metrics = {"loss": loss / n, "kl": kl / (micro_batches * world)}
    if good:
        metrics |= {"rewards/chosen": reward_good / good, "logps/chosen": logps_good / good}
    if bad:
        metrics |= {"rewards/rejected": reward_bad / bad, "logps/rejected": logps_bad / bad}
    if good and bad:
        metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
    return metrics


def reference_logps(
    cfg: DPOConfig,
    scorer: TokenLogps,
    ref_batches: list[Batch],
    size: int,
    dtype: torch.dtype,
    device: torch.device,
    on_progress: ProgressCallback | None = None,
    *,
    fsdp: bool = False,
) -> Tensor:
    """[size, 2] reference log-probs, computed once; no reference model outlives this call."""
    on_batch = None
    if on_progress is not None:
        report = on_progress

        def on_batch(done: int, total: int) -> None:
            report(f"reference log-probs: {done}/{total} batches")

    if cfg.ref_path:
        from transformers import AutoModelForCausalLM

        ref_model: Model = AutoModelForCausalLM.from_pretrained(cfg.ref_path, dtype=dtype)
        ref_scorer = scorer_make(cfg, ref_model, device, fsdp=fsdp)
        out = dataset_logps(ref_scorer, ref_batches, size, device, on_batch)
        del ref_model, ref_scorer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return out
    adapters_off = scorer.model.disable_adapter() if cfg.lora_r else contextlib.nullcontext()
    with adapters_off:
        return dataset_logps(scorer, ref_batches, size, device, on_batch)


def heldout_evaluate(
    cfg: DPOConfig,
    scorer: TokenLogps,
    eval_batches: list[Batch],
    eval_ref: Tensor | None,
    size: int,
    device: torch.device,
) -> dict[str, float]:
    """Preference accuracy on held-out pairs: the share where the implicit reward (log-ratio to the
    reference; reference-free losses: the length-normalised log-prob) ranks chosen above rejected,
    ties counting one half, so an untrained policy scores 0.5."""
    policy = dataset_logps(scorer, eval_batches, size, device)
    if eval_ref is not None:
        margins = (policy[:, 0] - eval_ref[:, 0]) - (policy[:, 1] - eval_ref[:, 1])
    else:
        tokens = torch.zeros(size, 2)
        for batch in eval_batches:
            counts = batch.completion_mask[:, 1:].sum(-1).float().chunk(2)
            tokens[batch.index, 0], tokens[batch.index, 1] = counts
        margins = policy[:, 0] / tokens[:, 0].clamp(min=1) - policy[:, 1] / tokens[:, 1].clamp(min=1)
    accuracy = ((margins > 0).float() + 0.5 * (margins == 0).float()).mean().item()
    return {"eval/preference_accuracy": accuracy, "eval/rewards/margins": cfg.beta * margins.mean().item()}


def step_sums(
    cfg: DPOConfig,
    processes: Processes,
    group: list[Batch],
    prepared: TrainData,
    ref: Tensor | None,
) -> Tensor:
    """Forward and backward through one optimizer step's micro-batches (gradients accumulate); the
    step's sums for its metrics, the loss's own (``pair_step`` or ``unpaired_step``) then the
    non-padding tokens."""
    device = processes.device
    n_examples = sum(batch.index.numel() for batch in group)
    group_tokens = sum(int(batch.completion_mask[:, 1:].sum()) for batch in group)
    totals = torch.zeros(10, dtype=torch.float64)
    for k, batch in enumerate(group):
        with processes.gradient_sync(k == len(group) - 1):
            on_device = batch.to(device)
            logps, tokens = sequence_logps(processes.trained, on_device)
            share = batch.index.numel() / n_examples
            if cfg.loss in UNPAIRED:
                assert prepared.desirable is not None
                loss, sums = unpaired_step(
                    cfg,
                    logps,
                    tokens,
                    ref,
                    batch.index,
                    prepared.desirable,
                    share,
                    group_tokens,
                    processes.world,
                    device,
                )
            else:
                loss, sums = pair_step(
                    cfg, logps, tokens, ref, batch.index, prepared.smoothing, share, device
                )
            loss.backward()  # type: ignore[no-untyped-call]
        totals += torch.tensor([*sums, on_device.attention_mask.sum().item()], dtype=torch.float64)
    return totals
