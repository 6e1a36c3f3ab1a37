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
from torch import Tensor, nn

from training.dpo.checkpoint import STATE_FILE, checkpoint_latest, checkpoint_save, directory_write_atomic
from training.dpo.config import UNPAIRED, DPOConfig
from training.dpo.data import (
    PAIR_SIDES,
    Batch,
    TokenizedPair,
    batches,
    kto_partners,
)
from training.dpo.logps import TokenLogps, causal_of
from training.dpo.processes import (
    Processes,
    kl_checker,
    optimizer_load,
)
from training.dpo.setup import (
    TrainData,
    adapter_merged,
    data_prepare,
    decoder_layers,
    dtype_for,
    model_load,
    processes_init,
    scorer_make,
    tokenizer_load,
    weights_restore,
)
from training.dpo.steps import (
    heldout_evaluate,
    pair_metrics,
    reference_logps,
    step_sums,
    unpaired_metrics,
)

MetricsCallback = Callable[[dict[str, float]], None]
ProgressCallback = Callable[[str], None]  # a line on what the run is doing between steps
Model = Any  # a transformers PreTrainedModel, a peft PeftModel, or either wrapped in DDP
METRICS_FILE = "metrics.jsonl"


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


def _linear_schedule(total_steps: int, warmup: int) -> Callable[[int], float]:
    """Linear warmup, then linear decay to 0 (transformers' "linear")."""

    def factor(done: int) -> float:
        if done < warmup:
            return done / max(1, warmup)
        return max(0.0, (total_steps - done) / max(1, total_steps - warmup))

    return factor


def _model_ready(
    cfg: DPOConfig, device: torch.device, dtype: torch.dtype, resume_from: Path | None, *, fsdp: bool
) -> tuple[Model, TokenLogps]:
    """The model (from the checkpoint on resume), behind the log-prob head (packed where it can be),
    on this process's device; activations recomputed and layers compiled where asked."""
    model = model_load(cfg, dtype, resume_from)
    causal = causal_of(model)
    if cfg.gradient_checkpointing:
        reentrant_off = {"use_reentrant": False}
        if hasattr(causal, "activation_checkpointing_enable"):  # transformers >= 5 names it so
            causal.activation_checkpointing_enable(activation_checkpointing_kwargs=reentrant_off)
        else:
            causal.gradient_checkpointing_enable(gradient_checkpointing_kwargs=reentrant_off)
    scorer = scorer_make(cfg, model, device, fsdp=fsdp)
    if cfg.compile:
        for layer in decoder_layers(causal):
            layer.compile(dynamic=True)
    return model, scorer


def _references(
    cfg: DPOConfig,
    run: _Run,
    scorer: TokenLogps,
    fixed: list[Batch],
    eval_batches: list[Batch],
    on_progress: ProgressCallback | None,
) -> tuple[Tensor | None, Tensor | None]:
    """Reference log-probs of the training and held-out pairs: once, before any step, kept on disk
    so a resumed run reuses them (none for a reference-free loss)."""
    if cfg.reference_free:
        return None, None
    ref_file = run.out / f"ref_logps.rank{run.rank}.pt"
    if run.resume_from is not None and ref_file.is_file():
        saved = torch.load(ref_file, weights_only=True)
        return saved["train"], saved["eval"]
    size, eval_size = len(run.prepared.data), len(run.prepared.eval_data)
    ref = reference_logps(cfg, scorer, fixed, size, run.dtype, run.device, on_progress, fsdp=run.fsdp)
    eval_ref = (
        reference_logps(cfg, scorer, eval_batches, eval_size, run.dtype, run.device, fsdp=run.fsdp)
        if eval_size
        else None
    )
    run.out.mkdir(parents=True, exist_ok=True)
    tmp = ref_file.with_suffix(".tmp")
    torch.save({"train": ref, "eval": eval_ref}, tmp)
    os.replace(tmp, ref_file)
    return ref, eval_ref


@dataclass
class _Run:
    """What every stage of one run reads: where it writes, which process it is, its data."""

    out: Path
    rank: int
    world: int
    device: torch.device
    dtype: torch.dtype
    fsdp: bool
    resume_from: Path | None
    prepared: TrainData

    @property
    def is_main(self) -> bool:
        return self.rank == 0


@dataclass
class _Schedule:
    """The optimizer, its learning-rate schedule, the steps in all and per epoch, the step reached."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    params: list[nn.Parameter]
    groups_per_epoch: int
    total_steps: int
    step: int = 0


def _schedule(cfg: DPOConfig, run: _Run, scorer: TokenLogps, micro_batches: int) -> _Schedule:
    """AdamW and a linear schedule with warmup; on resume, their state and the step from the checkpoint."""
    params = [p for p in scorer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params,
        lr=cfg.learning_rate,
        betas=(0.9, 0.999),
        eps=1e-8,
        weight_decay=0.0,
        fused=run.device.type == "cuda" or None,  # one kernel for the whole update on a GPU
    )
    groups_per_epoch = math.ceil(micro_batches / cfg.grad_accum)
    total_steps = groups_per_epoch * cfg.epochs
    if cfg.max_steps:
        total_steps = min(total_steps, cfg.max_steps)
    warmup = int(cfg.warmup_ratio * total_steps)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _linear_schedule(total_steps, warmup))
    schedule = _Schedule(optimizer, scheduler, params, groups_per_epoch, total_steps)
    if run.resume_from is not None:
        state = torch.load(run.resume_from / STATE_FILE, weights_only=True)
        optimizer_load(scorer, optimizer, state["optimizer"], fsdp=run.fsdp)
        scheduler.load_state_dict(state["scheduler"])
        schedule.step = state["step"]
        if run.is_main:
            _metrics_truncate(run.out, schedule.step)
    return schedule


def _checkpoint(run: _Run, schedule: _Schedule, processes: Processes, model: Model, tokenizer: Any) -> None:
    """A complete checkpoint of the step reached (every process takes part; rank 0 writes); older
    ones are removed once it is whole."""
    weights, optimizer_full = processes.model_state(), processes.optimizer_state(schedule.optimizer)
    if run.is_main:
        state = {
            "step": schedule.step,
            "optimizer": optimizer_full,
            "scheduler": schedule.scheduler.state_dict(),
        }
        saved = checkpoint_save(
            run.out, step=schedule.step, model=model, tokenizer=tokenizer, state=state, state_dict=weights
        )
        for older in run.out.glob("checkpoint-*"):  # keep the newest complete one only
            if older != saved and older.is_dir():
                shutil.rmtree(older, ignore_errors=True)
    processes.barrier()


def _progress_bar(run: _Run, schedule: _Schedule) -> Any:
    """A live bar of steps on a terminal (rank 0)."""
    from tqdm.auto import tqdm

    return tqdm(
        total=schedule.total_steps,
        initial=schedule.step,
        desc="dpo",
        unit="step",
        disable=not run.is_main or not sys.stderr.isatty(),
    )


def _step_metrics(
    cfg: DPOConfig,
    schedule: _Schedule,
    totals: Tensor,
    micro_batches: int,
    world: int,
    grad_norm: Any,
    learning_rate: float | Tensor,
    elapsed: float,
) -> dict[str, float]:
    return {
        "step": schedule.step,
        "epoch": round(schedule.step / schedule.groups_per_epoch, 4),
        **(
            unpaired_metrics(cfg, totals, micro_batches, world)
            if cfg.loss in UNPAIRED
            else pair_metrics(totals)
        ),
        "grad_norm": float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm),
        "learning_rate": float(learning_rate),
        "tokens/s": totals[9].item() / elapsed,
    }


def _kl_stop_keep(
    cfg: DPOConfig,
    run: _Run,
    model: Model,
    kl_stop: dict[str, float],
    step: int,
    on_progress: ProgressCallback | None,
) -> None:
    """Past the KL budget: the last checkpoint within it is what the run keeps."""
    last_within = checkpoint_latest(run.out)
    assert last_within is not None  # step 0's, at least
    kl_stop["kept_step"] = weights_restore(cfg, model, last_within, run.dtype)
    if run.is_main:
        _metrics_append(run.out, {"step": step, "kl_stop": kl_stop})
        if on_progress is not None:
            on_progress(
                f"stopped at step {step}: held-out KL {kl_stop['kl']:.3f} nats/token > budget "
                f"{cfg.kl_budget:g}; keeping step {kl_stop['kept_step']:.0f}"
            )


def _final_write(
    cfg: DPOConfig, run: _Run, model: Model, tokenizer: Any, weights: dict[str, Any] | None
) -> tuple[Path, Path | None]:
    """The trained model (for LoRA: the adapter) as final/, and with merge the merged model as
    merged/, each written whole or not at all (rank 0)."""
    final_dir, merged_dir = run.out / "final", None
    if not run.is_main:
        return final_dir, None

    def write_final(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=weights)
        tokenizer.save_pretrained(tmp)

    directory_write_atomic(final_dir, write_final)
    if cfg.lora_r and cfg.merge:
        merged = adapter_merged(cfg, model, final_dir, run.dtype, sharded=run.fsdp)

        def write_merged(tmp: Path) -> None:
            merged.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)

        merged_dir = directory_write_atomic(run.out / "merged", write_merged)
    return final_dir, merged_dir


def train(
    cfg: DPOConfig,
    *,
    on_metrics: MetricsCallback | None = None,
    on_progress: ProgressCallback | None = None,
) -> TrainResult:
    """Train from ``cfg``; every optimizer step's metrics go to ``metrics.jsonl`` and ``on_metrics``;
    ``on_progress`` hears what happens between steps (the reference pass, batch by batch)."""
    rank, world, device = processes_init()
    random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)

    # Data first: a bad file fails in seconds, before any model is loaded.
    tokenizer = tokenizer_load(cfg.policy_path)
    prepared = data_prepare(cfg, tokenizer)
    out = Path(cfg.output_dir)
    resume_from = checkpoint_latest(out) if cfg.resume else None
    fsdp = world > 1 and cfg.sharding == "fsdp"
    run = _Run(out, rank, world, device, dtype_for(cfg, device), fsdp, resume_from, prepared)
    model, scorer = _model_ready(cfg, device, run.dtype, resume_from, fsdp=fsdp)

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

    reference_started = time.perf_counter()
    ref, eval_ref = _references(cfg, run, scorer, fixed, eval_batches, on_progress)
    reference_seconds = time.perf_counter() - reference_started
    eval_before = (
        heldout_evaluate(cfg, scorer, eval_batches, eval_ref, len(eval_data), device) if eval_data else {}
    )
    if fsdp:  # a forward with no backward leaves the root's parameters gathered: the optimizer wants shards
        scorer.reshard()  # type: ignore[operator]

    schedule = _schedule(cfg, run, scorer, len(fixed))
    kl_check = kl_checker(cfg, model, tokenizer, run.dtype, device, rank, world) if cfg.kl_every else None
    processes = Processes(scorer, model, world, device, fsdp=fsdp)
    bar = _progress_bar(run, schedule)
    metrics: dict[str, float] = {}
    train_seconds = 0.0
    kl_checks: list[tuple[int, float]] = []
    kl_stop: dict[str, float] | None = None
    if kl_check is not None and resume_from is None:
        _checkpoint(
            run, schedule, processes, model, tokenizer
        )  # step 0: kept if the first check passes the budget
    scorer.train()
    shuffled: tuple[int, list[Batch]] = (-1, [])

    # The loop: one optimizer step per group of grad_accum micro-batches.
    while schedule.step < schedule.total_steps:
        epoch, group_index = divmod(schedule.step, schedule.groups_per_epoch)
        if shuffled[0] != epoch:  # each epoch its own order, reproducible from the seed (and on resume)
            shuffled = (epoch, batched(prepared.data, mine, cfg.seed + epoch, prepared.sides))
        group = shuffled[1][group_index * cfg.grad_accum : (group_index + 1) * cfg.grad_accum]
        started = time.perf_counter()
        totals = step_sums(cfg, processes, group, prepared, ref)
        grad_norm = torch.nn.utils.clip_grad_norm_(schedule.params, cfg.max_grad_norm)
        learning_rate = schedule.scheduler.get_last_lr()[0]
        schedule.optimizer.step()
        schedule.scheduler.step()
        schedule.optimizer.zero_grad(set_to_none=True)
        schedule.step += 1
        totals = processes.summed(totals)
        elapsed = time.perf_counter() - started
        train_seconds += elapsed
        metrics = _step_metrics(cfg, schedule, totals, len(group), world, grad_norm, learning_rate, elapsed)
        step = schedule.step
        checked = kl_check is not None and (step % cfg.kl_every == 0 or step == schedule.total_steps)
        if checked:
            assert kl_check is not None
            estimate = kl_check(step)
            scorer.train()
            metrics["eval/kl"] = estimate
            kl_checks.append((step, estimate))
            if estimate > cfg.kl_budget:
                kl_stop = {"step": step, "kl": estimate, "budget": cfg.kl_budget}
        if run.is_main:
            _metrics_append(out, metrics)
            if on_metrics is not None:
                on_metrics(metrics)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}")
            bar.update(1)
        if kl_stop is not None:
            break
        if kl_check is not None:  # checkpoints at the checks within the budget only: the newest is kept
            if checked:
                _checkpoint(run, schedule, processes, model, tokenizer)
        elif (cfg.save_steps and step % cfg.save_steps == 0) or (
            not cfg.save_steps and step % schedule.groups_per_epoch == 0
        ):
            _checkpoint(run, schedule, processes, model, tokenizer)
    bar.close()

    # The end: past the KL budget, the last checkpoint within it; then the final model, atomically.
    if kl_stop is not None:
        _kl_stop_keep(cfg, run, model, kl_stop, schedule.step, on_progress)
    eval_after = (
        heldout_evaluate(cfg, scorer, eval_batches, eval_ref, len(eval_data), device) if eval_data else {}
    )
    if fsdp:
        scorer.reshard()  # type: ignore[operator]
    weights = processes.model_state()
    if run.is_main and eval_data:
        _metrics_append(out, {"step": schedule.step, "eval_before": eval_before, "eval_after": eval_after})
    final_dir, merged_dir = _final_write(cfg, run, model, tokenizer, weights)
    processes.barrier()
    return TrainResult(
        out,
        final_dir,
        merged_dir,
        schedule.step,
        metrics,
        eval_before,
        eval_after,
        reference_seconds,
        train_seconds,
        kl_checks,
        kl_stop,
    )
