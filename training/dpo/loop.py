"""The training loop, read top to bottom: seed, load, reference pass, then batch → log-probs → loss
→ step → log → checkpoint.

Reference log-probs are computed once, before the first step, in a no-grad pass over every pair,
then the reference is gone: with no ``ref_path`` the reference *is* the starting policy, measured
before it changes (with LoRA: the base with adapters disabled), so no second copy is ever loaded.
Every forward goes through :class:`~training.dpo.logps.TokenLogps`: each batch's rows packed into one
(no compute on padding) where the model takes packed attention, else length-grouped batches, and the
LM head applied in chunks to the response positions only. Under ``torchrun`` each process trains on
its shard with DistributedDataParallel, or with FSDP (``sharding="fsdp"``: parameters, gradients and
optimizer state sharded across processes, for a model that does not fit one device); rank 0 writes
metrics and checkpoints (under FSDP the full model, gathered, as Hugging Face safetensors).
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from generation.backends.transformers import stop_ids as model_stop_ids
from training.dpo import kl as heldout_kl
from training.dpo import losses
from training.dpo.attention import NAME as VARLEN
from training.dpo.attention import varlen_enable
from training.dpo.checkpoint import STATE_FILE, checkpoint_latest, checkpoint_save, directory_write_atomic
from training.dpo.config import UNPAIRED, DPOConfig
from training.dpo.data import (
    PAIR_SIDES,
    Batch,
    TokenizedPair,
    batches,
    examples_read,
    examples_tokenize,
    kto_partners,
    pairs_read,
    pairs_tokenize,
)
from training.dpo.logps import TokenLogps, causal_of, dataset_logps, sequence_logps

MetricsCallback = Callable[[dict[str, float]], None]
ProgressCallback = Callable[[str], None]  # a line on what the run is doing between steps
Model = Any  # a transformers PreTrainedModel, a peft PeftModel, or either wrapped in DDP
METRICS_FILE = "metrics.jsonl"
MAX_SMOOTHING = 0.49  # robust DPO divides by 1 - 2ε: a pair with confidence at or below 0.5 is capped here


@dataclass
class TrainResult:
    output_dir: Path
    final_dir: Path  # the trained model (for LoRA: the adapter), Hugging Face format
    merged_dir: Path | None
    steps: int
    last_metrics: dict[str, float] = field(default_factory=dict)
    eval_before: dict[str, float] = field(default_factory=dict)
    eval_after: dict[str, float] = field(default_factory=dict)
    reference_seconds: float = 0.0  # the one reference pass
    train_seconds: float = 0.0  # the optimizer steps (reference pass, evaluation and saving excluded)
    # with kl_every: each check's step and estimate; and where the budget was passed, the step it was
    # passed at, its estimate and the step whose weights were kept (the last check within, or 0)
    kl_checks: list[tuple[int, float]] = field(default_factory=list)
    kl_stop: dict[str, float] | None = None


def _distributed() -> tuple[int, int, torch.device]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


def _dtype(cfg: DPOConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "fp32":
        return torch.float32
    if cfg.dtype == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def _tokenizer(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _model(cfg: DPOConfig, dtype: torch.dtype, resume_from: Path | None) -> Model:
    from transformers import AutoModelForCausalLM

    if not cfg.lora_r:
        return AutoModelForCausalLM.from_pretrained(str(resume_from or cfg.policy_path), dtype=dtype)
    from peft import LoraConfig, PeftModel, get_peft_model

    base = AutoModelForCausalLM.from_pretrained(cfg.policy_path, dtype=dtype)
    if resume_from is not None:
        return PeftModel.from_pretrained(base, str(resume_from), is_trainable=True)
    lora = LoraConfig(
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r,
        lora_dropout=0.0,
        target_modules="all-linear",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(base, lora)


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


def _policy_side(cfg: DPOConfig, p: PairLogps) -> dict[str, Any]:
    return {"policy_chosen": p.chosen, "policy_rejected": p.rejected, "beta": cfg.beta}


def _both_sides(cfg: DPOConfig, p: PairLogps) -> dict[str, Any]:
    assert p.ref_chosen is not None and p.ref_rejected is not None
    return {**_policy_side(cfg, p), "ref_chosen": p.ref_chosen, "ref_rejected": p.ref_rejected}


def _lengths(p: PairLogps) -> dict[str, Any]:
    return {"chosen_tokens": p.chosen_tokens, "rejected_tokens": p.rejected_tokens}


PairLoss = Callable[[DPOConfig, PairLogps], tuple[Tensor, Tensor, Tensor]]

# The pair losses by name (losses.py, each from its paper): (per-pair loss, chosen rewards, rejected
# rewards). KTO and SFT train on single answers: ``_unpaired_step``.
PAIR_LOSSES: dict[str, PairLoss] = {
    "sigmoid": lambda cfg, p: losses.dpo_sigmoid(**_both_sides(cfg, p)),
    "robust": lambda cfg, p: losses.dpo_robust(
        **_both_sides(cfg, p), label_smoothing=cfg.label_smoothing if p.smoothing is None else p.smoothing
    ),
    "hinge": lambda cfg, p: losses.dpo_hinge(**_both_sides(cfg, p)),
    "ipo": lambda cfg, p: losses.dpo_ipo(**_both_sides(cfg, p), **_lengths(p)),
    "dpop": lambda cfg, p: losses.dpo_positive(**_both_sides(cfg, p), dpop_lambda=cfg.dpop_lambda),
    "simpo": lambda cfg, p: losses.simpo(**_policy_side(cfg, p), **_lengths(p), gamma=cfg.simpo_gamma),
    "orpo": lambda cfg, p: losses.orpo(**_policy_side(cfg, p), **_lengths(p)),
}


def _pair_step(
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
    sums for the step's metrics, in :func:`_pair_metrics`'s order. RPO adds the chosen answer's
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


def _pair_metrics(totals: Tensor) -> dict[str, float]:
    """The step's metrics from :func:`_pair_step`'s sums (all-reduced), TRL's names."""
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


def _layers(causal: Any) -> list[nn.Module]:
    """The decoder blocks of a transformers causal LM (what FSDP shards and compile compiles)."""
    decoder = getattr(causal, causal.base_model_prefix)
    layers = getattr(decoder, "layers", None) or getattr(decoder, "h", None)
    if layers is None:
        raise ValueError(f"{type(causal).__name__}: no decoder layers found to shard")
    return list(layers)


def _scorer(cfg: DPOConfig, model: Model, device: torch.device, *, fsdp: bool) -> TokenLogps:
    """``model`` behind the log-prob head, packed if it can be, on ``device`` (or sharded onto it)."""
    causal = causal_of(model)
    causal.config.use_cache = False
    packed = cfg.padding_free and varlen_enable(causal)
    # SFT's rows are single answers, not [chosen; rejected] halves: nothing to share
    scorer = TokenLogps(model, packed=packed, share_prompt=cfg.share_prompt and cfg.loss != "sft")
    if fsdp:  # each block its own shard group, the rest (embeddings, head, norm) the root's
        from torch.distributed.fsdp import fully_shard

        for layer in _layers(causal):
            fully_shard(layer)
        fully_shard(scorer)
    else:
        scorer.to(device)
    return scorer


def _unpaired_step(
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
    its sums for the step's metrics, in :func:`_unpaired_metrics`'s order.

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


def _unpaired_metrics(cfg: DPOConfig, totals: Tensor, micro_batches: int, world: int) -> dict[str, float]:
    """The step's metrics from :func:`_unpaired_step`'s sums (all-reduced), TRL's names."""
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


def _reference_logps(
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
        ref_scorer = _scorer(cfg, ref_model, device, fsdp=fsdp)
        out = dataset_logps(ref_scorer, ref_batches, size, device, on_batch)
        del ref_model, ref_scorer
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        return out
    adapters_off = scorer.model.disable_adapter() if cfg.lora_r else contextlib.nullcontext()
    with adapters_off:
        return dataset_logps(scorer, ref_batches, size, device, on_batch)


def _evaluate(
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


@dataclass
class TrainData:
    """Every example, validated and tokenised before a model is loaded (a bad file fails in seconds)."""

    data: list[TokenizedPair]  # pairs; KTO and SFT: single answers
    eval_data: list[TokenizedPair]  # held-out pairs (preference accuracy before and after)
    sides: tuple[str, ...]  # the token rows each example lays down (SFT: its answer alone)
    smoothing: Tensor | None = None  # robust with confidence_smoothing: each pair's label smoothing
    desirable: Tensor | None = None  # KTO: each answer's label


def _data_prepare(cfg: DPOConfig, tokenizer: Any) -> TrainData:
    lengths: dict[str, Any] = {"max_length": cfg.max_length, "max_prompt_length": cfg.max_prompt_length}
    eval_pairs = pairs_read(cfg.eval_data_path) if cfg.eval_data_path else []
    eval_data = pairs_tokenize(tokenizer, eval_pairs, **lengths)
    if (
        cfg.loss in UNPAIRED
    ):  # KTO: answers labelled desirable or not; SFT: target answers (pairs: the chosen one)
        examples = examples_read(cfg.data_path, labelled=cfg.loss == "kto")
        return TrainData(
            data=examples_tokenize(tokenizer, examples, **lengths),
            eval_data=eval_data,
            sides=("chosen_ids",) if cfg.loss == "sft" else PAIR_SIDES,  # KTO: each answer, its KL partner
            desirable=torch.tensor([e.label for e in examples]),
        )
    pairs = pairs_read(cfg.data_path)
    smoothing = None
    if cfg.confidence_smoothing:
        own = [cfg.label_smoothing if p.confidence is None else 1 - p.confidence for p in pairs]
        smoothing = torch.tensor(own).clamp(0.0, MAX_SMOOTHING)
    return TrainData(pairs_tokenize(tokenizer, pairs, **lengths), eval_data, PAIR_SIDES, smoothing=smoothing)


class _Processes:
    """What changes with several processes, kept at the loop's edges: the module the steps run (this
    process's scorer, or it wrapped in DistributedDataParallel), when gradients are reduced, the sums
    all-reduced, and the whole model and optimizer state a checkpoint needs (FSDP gathers them to
    rank 0's CPU). With one process each is a no-op."""

    def __init__(self, scorer: TokenLogps, model: Model, world: int, device: torch.device, *, fsdp: bool):
        self.scorer, self.model, self.world, self.device, self.fsdp = scorer, model, world, device, fsdp
        self.trained: Any = scorer
        if world > 1 and not fsdp:
            self.trained = nn.parallel.DistributedDataParallel(
                scorer, device_ids=[device.index] if device.type == "cuda" else None
            )

    def gradient_sync(self, on: bool) -> contextlib.AbstractContextManager[Any]:
        """Gradients reduced across processes only on a step's last micro-batch."""
        if self.world == 1:
            return contextlib.nullcontext()
        if self.fsdp:
            self.trained.set_requires_gradient_sync(on)
            return contextlib.nullcontext()
        return contextlib.nullcontext() if on else self.trained.no_sync()

    def summed(self, totals: Tensor) -> Tensor:
        if self.world == 1:
            return totals
        on = totals.to(self.device)
        dist.all_reduce(on)
        return on.cpu()

    def model_state(self) -> dict[str, Any] | None:
        """Under FSDP the full model, gathered on rank 0's CPU (every rank must call); else None."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(self.model, options=options)

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        if not self.fsdp:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_optimizer_state_dict(self.scorer, optimizer, options=options)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def _optimizer_load(
    scorer: TokenLogps, optimizer: torch.optim.Optimizer, state: dict[str, Any], *, fsdp: bool
) -> None:
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(scorer, optimizer, state, options=StateDictOptions(full_state_dict=True))


def _metrics_append(out: Path, record: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with (out / METRICS_FILE).open("a", encoding="utf-8") as stream:
        stream.write(json.dumps(record) + "\n")


def _metrics_truncate(out: Path, step: int) -> None:
    """On resume: drop what steps after the checkpoint had logged."""
    if not (out / METRICS_FILE).is_file():
        return
    kept = [
        line
        for line in (out / METRICS_FILE).read_text(encoding="utf-8").splitlines()
        if json.loads(line).get("step", 0) <= step and "eval_before" not in line
    ]
    (out / METRICS_FILE).write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def _step_sums(
    cfg: DPOConfig,
    processes: _Processes,
    group: list[Batch],
    prepared: TrainData,
    ref: Tensor | None,
) -> Tensor:
    """Forward and backward through one optimizer step's micro-batches (gradients accumulate); the
    step's sums for its metrics, the loss's own (``_pair_step`` or ``_unpaired_step``) then the
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
                loss, sums = _unpaired_step(
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
                loss, sums = _pair_step(
                    cfg, logps, tokens, ref, batch.index, prepared.smoothing, share, device
                )
            loss.backward()  # type: ignore[no-untyped-call]
        totals += torch.tensor([*sums, on_device.attention_mask.sum().item()], dtype=torch.float64)
    return totals


def _linear_schedule(total_steps: int, warmup: int) -> Callable[[int], float]:
    """Linear warmup, then linear decay to 0 (transformers' "linear")."""

    def factor(done: int) -> float:
        if done < warmup:
            return done / max(1, warmup)
        return max(0.0, (total_steps - done) / max(1, total_steps - warmup))

    return factor


def train(
    cfg: DPOConfig,
    *,
    on_metrics: MetricsCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train from ``cfg``; every optimizer step's metrics go to ``metrics.jsonl`` and ``on_metrics``;
    ``on_progress`` hears what happens between steps (the reference pass, batch by batch)."""
    rank, world, device = _distributed()
    is_main = rank == 0
    out = Path(cfg.output_dir)
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # Data first: a bad file fails in seconds, before any model is loaded.
    tokenizer = _tokenizer(cfg.policy_path)
    prepared = _data_prepare(cfg, tokenizer)

    # The model, behind the log-prob head (packed where it can be), on this process's device.
    resume_from = checkpoint_latest(out) if cfg.resume else None
    dtype = _dtype(cfg, device)
    fsdp = world > 1 and cfg.sharding == "fsdp"
    model = _model(cfg, dtype, resume_from)
    causal = causal_of(model)
    if cfg.gradient_checkpointing:
        reentrant_off = {"use_reentrant": False}
        if hasattr(causal, "activation_checkpointing_enable"):  # transformers >= 5 names it so
            causal.activation_checkpointing_enable(activation_checkpointing_kwargs=reentrant_off)
        else:
            causal.gradient_checkpointing_enable(gradient_checkpointing_kwargs=reentrant_off)
    scorer = _scorer(cfg, model, device, fsdp=fsdp)
    if cfg.compile:
        for layer in _layers(causal):
            layer.compile(dynamic=True)

    # Batches. This process's shard is fixed across epochs; under torchrun every shard is the same
    # size (the first examples repeat, as DistributedSampler pads), so collectives stay in step.
    everyone = [i % len(prepared.data) for i in range(math.ceil(len(prepared.data) / world) * world)]
    mine = everyone[rank::world]
    if cfg.loss == "kto":
        prepared.data = kto_partners(
            prepared.data, mine, batch_size=cfg.batch_size, max_length=cfg.max_length
        )
    group_by_length = cfg.padding_free and not scorer.packed  # padded rows: pad little at least

    def batched(
        data: list[TokenizedPair], indices: list[int], shuffle_seed: int | None, sides: tuple[str, ...]
    ) -> list[Batch]:
        return batches(
            data,
            indices,
            batch_size=cfg.batch_size,
            pad_id=tokenizer.pad_token_id,
            shuffle_seed=shuffle_seed,
            group_by_length=group_by_length,
            sides=sides,
        )

    fixed = batched(prepared.data, mine, None, prepared.sides)
    eval_data = prepared.eval_data
    eval_batches = batched(eval_data, list(range(len(eval_data))), None, PAIR_SIDES)

    # Reference log-probs: once, before any step (kept on disk so a resumed run reuses them).
    ref = eval_ref = None
    reference_started = time.perf_counter()
    if not cfg.reference_free:
        ref_file = out / f"ref_logps.rank{rank}.pt"
        if resume_from is not None and ref_file.is_file():
            saved = torch.load(ref_file, weights_only=True)
            ref, eval_ref = saved["train"], saved["eval"]
        else:
            ref = _reference_logps(
                cfg, scorer, fixed, len(prepared.data), dtype, device, on_progress, fsdp=fsdp
            )
            if eval_data:
                eval_ref = _reference_logps(
                    cfg, scorer, eval_batches, len(eval_data), dtype, device, fsdp=fsdp
                )
            out.mkdir(parents=True, exist_ok=True)
            tmp = ref_file.with_suffix(".tmp")
            torch.save({"train": ref, "eval": eval_ref}, tmp)
            os.replace(tmp, ref_file)
    reference_seconds = time.perf_counter() - reference_started
    eval_before = _evaluate(cfg, scorer, eval_batches, eval_ref, len(eval_data), device) if eval_data else {}
    if fsdp:  # a forward with no backward leaves the root's parameters gathered: the optimizer wants shards
        scorer.reshard()  # type: ignore[operator]

    # Optimizer and schedule; on resume, their state and the step from the checkpoint.
    params = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        fused=device.type == "cuda" or None,  # one kernel for the whole update on a GPU
    )
    groups_per_epoch = math.ceil(len(fixed) / cfg.grad_accum)
    total_steps = groups_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = int(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(total_steps, warmup))
    step = 0
    if resume_from is not None:
        state = torch.load(resume_from / STATE_FILE, weights_only=True)
        _optimizer_load(scorer, optimizer, state["optimizer"], fsdp=fsdp)
        scheduler.load_state_dict(state["scheduler"])
        step = state["step"]
        if is_main:
            _metrics_truncate(out, step)
    kl_check = _kl_checker(cfg, model, tokenizer, dtype, device, rank, world) if cfg.kl_every else None
    processes = _Processes(scorer, model, world, device, fsdp=fsdp)

    def save_checkpoint() -> None:
        weights, optimizer_full = processes.model_state(), processes.optimizer_state(optimizer)
        if is_main:
            state = {"step": step, "optimizer": optimizer_full, "scheduler": scheduler.state_dict()}
            saved = checkpoint_save(
                out, step=step, model=model, tokenizer=tokenizer, state=state, state_dict=weights
            )
            for older in out.glob("checkpoint-*"):  # keep the newest complete one only
                if older != saved and older.is_dir():
                    shutil.rmtree(older, ignore_errors=True)
        processes.barrier()

    from tqdm.auto import tqdm

    bar = tqdm(
        total=total_steps,
        initial=step,
        desc="dpo",
        unit="step",
        disable=not is_main or not sys.stderr.isatty(),
    )
    metrics: dict[str, float] = {}
    train_seconds = 0.0
    kl_checks: list[tuple[int, float]] = []
    kl_stop: dict[str, float] | None = None
    if kl_check is not None and resume_from is None:
        save_checkpoint()  # step 0 is within any budget: what is kept if the first check passes it
    scorer.train()
    shuffled: tuple[int, list[Batch]] = (-1, [])

    # The loop: one optimizer step per group of grad_accum micro-batches.
    while step < total_steps:
        epoch, group_index = divmod(step, groups_per_epoch)
        if shuffled[0] != epoch:  # each epoch its own order, reproducible from the seed (and on resume)
            shuffled = (epoch, batched(prepared.data, mine, cfg.seed + epoch, prepared.sides))
        group = shuffled[1][group_index * cfg.grad_accum : (group_index + 1) * cfg.grad_accum]
        started = time.perf_counter()
        totals = _step_sums(cfg, processes, group, prepared, ref)
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        totals = processes.summed(totals)
        elapsed = time.perf_counter() - started
        train_seconds += elapsed
        metrics = {
            "step": step,
            "epoch": round(step / groups_per_epoch, 4),
            **(
                _unpaired_metrics(cfg, totals, len(group), world)
                if cfg.loss in UNPAIRED
                else _pair_metrics(totals)
            ),
            "grad_norm": float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm),
            "learning_rate": float(learning_rate),
            "tokens/s": totals[9].item() / elapsed,
        }
        checked = kl_check is not None and (step % cfg.kl_every == 0 or step == total_steps)
        if checked:
            assert kl_check is not None
            estimate = kl_check(step)
            scorer.train()
            metrics["eval/kl"] = estimate
            kl_checks.append((step, estimate))
            if estimate > cfg.kl_budget:
                kl_stop = {"step": step, "kl": estimate, "budget": cfg.kl_budget}
        if is_main:
            _metrics_append(out, metrics)
            if on_metrics is not None:
                on_metrics(metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            bar.update(1)
        if kl_stop is not None:
            break
        if kl_check is not None:  # checkpoints at the checks within the budget only: the newest is kept
            if checked:
                save_checkpoint()
        elif (cfg.save_steps and step % cfg.save_steps == 0) or (
            not cfg.save_steps and step % groups_per_epoch == 0
        ):
            save_checkpoint()
    bar.close()

    # The end: past the KL budget, the last checkpoint within it; then the final model, atomically.
    if kl_stop is not None:
        last_within = checkpoint_latest(out)
        assert last_within is not None  # step 0's, at least
        kl_stop["kept_step"] = _weights_restore(cfg, model, last_within, dtype)
        if is_main:
            _metrics_append(out, {"step": step, "kl_stop": kl_stop})
            if on_progress is not None:
                on_progress(
                    f"stopped at step {step}: held-out KL {kl_stop['kl']:.3f} nats/token > budget "
                    f"{cfg.kl_budget:g}; keeping step {kl_stop['kept_step']:.0f}"
                )
    eval_after = _evaluate(cfg, scorer, eval_batches, eval_ref, len(eval_data), device) if eval_data else {}
    if fsdp:
        scorer.reshard()  # type: ignore[operator]
    final_dir, merged_dir = out / "final", None
    weights = processes.model_state()
    if is_main:
        if eval_data:
            _metrics_append(out, {"step": step, "eval_before": eval_before, "eval_after": eval_after})

        def write_final(tmp: Path) -> None:
            model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
            tokenizer.save_pretrained(tmp)

        directory_write_atomic(final_dir, write_final)
        if cfg.lora_r and cfg.merge:
            merged = _merged(cfg, model, final_dir, dtype, sharded=fsdp)

            def write_merged(tmp: Path) -> None:
                merged.save_pretrained(tmp, safe_serialization=True)
                tokenizer.save_pretrained(tmp)

            merged_dir = directory_write_atomic(out / "merged", write_merged)
    processes.barrier()
    return TrainResult(
        out,
        final_dir,
        merged_dir,
        step,
        metrics,
        eval_before,
        eval_after,
        reference_seconds,
        train_seconds,
        kl_checks,
        kl_stop,
    )


def _kl_checker(
    cfg: DPOConfig,
    model: Model,
    tokenizer: Any,
    dtype: torch.dtype,
    device: torch.device,
    rank: int,
    world: int,
) -> Callable[[int], float]:
    """``check(step)``: the held-out KL estimate now (kl.py), the same on every process (each
    samples its share of the prompts). The reference is held for the whole run: with LoRA it is
    the base with adapters off; otherwise a frozen copy (``ref_path`` or the starting model) beside
    the policy, which doubles the weights in memory while the early stop is on."""
    assert cfg.kl_prompts_path is not None
    prompts = heldout_kl.prompts_read(cfg.kl_prompts_path)
    rendered = heldout_kl.prompts_render(
        tokenizer, prompts, max_prompt_length=cfg.max_prompt_length or cfg.max_length // 2
    )[rank::world]
    causal = causal_of(model)
    pad_id, stop_ids = tokenizer.pad_token_id, model_stop_ids(causal, tokenizer)
    reference: Any = None
    if not cfg.lora_r:
        from transformers import AutoModelForCausalLM

        reference = AutoModelForCausalLM.from_pretrained(cfg.ref_path or cfg.policy_path, dtype=dtype)
        reference.to(device).eval().requires_grad_(False)

    def check(step: int) -> float:
        packed = causal.config._attn_implementation
        if packed == VARLEN:  # packed attention takes packed rows only: padded batches here
            causal.set_attn_implementation("sdpa")
        try:
            causal.eval()
            return measure(step)
        finally:
            if packed == VARLEN:
                causal.set_attn_implementation(VARLEN)

    def measure(step: int) -> float:
        answers, mine = heldout_kl.answers_sample(
            causal,
            rendered,
            pad_id=pad_id,
            stop_ids=stop_ids,
            temperature=cfg.kl_temperature,
            top_p=cfg.kl_top_p,
            max_new_tokens=cfg.kl_max_new_tokens,
            seed=cfg.seed + step * world + rank,
            device=device,
        )
        if reference is None:
            with model.disable_adapter():
                theirs = heldout_kl.answers_logps(causal, rendered, answers, pad_id=pad_id, device=device)
        else:
            theirs = heldout_kl.answers_logps(reference, rendered, answers, pad_id=pad_id, device=device)
        sums = torch.tensor([(mine - theirs).sum().item(), float(len(answers))], dtype=torch.float64)
        if world > 1:
            on = sums.to(device)
            dist.all_reduce(on)
            sums = on.cpu()
        return sums[0].item() / max(1.0, sums[1].item())

    return check


def _weights_restore(cfg: DPOConfig, model: Model, checkpoint: Path, dtype: torch.dtype) -> int:
    """Load ``checkpoint``'s weights (a LoRA run: its adapter) into ``model``; returns its step."""
    if cfg.lora_r:
        from peft import load_peft_weights, set_peft_model_state_dict

        set_peft_model_state_dict(model, load_peft_weights(str(checkpoint)))
    else:
        from transformers import AutoModelForCausalLM

        saved = AutoModelForCausalLM.from_pretrained(str(checkpoint), dtype=dtype)
        causal_of(model).load_state_dict(saved.state_dict())
        del saved
    return int(torch.load(checkpoint / STATE_FILE, weights_only=True)["step"])


def _merged(cfg: DPOConfig, model: Model, adapter_dir: Path, dtype: torch.dtype, *, sharded: bool) -> Model:
    """The LoRA adapter merged into its base. Sharded weights are not whole in any process, so the
    base is loaded again and the saved adapter merged into it."""
    if not sharded:
        return model.merge_and_unload()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(cfg.policy_path, dtype=dtype)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
