"""What differs with several processes (torchrun: DDP or FSDP): gradient sync, sums across ranks,
the full model and optimizer state gathered for a checkpoint; and the held-out KL check, the same
on every process."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from generation.backends.transformers import stop_ids as model_stop_ids
from training.dpo import kl as heldout_kl
from training.dpo.attention import NAME as VARLEN
from training.dpo.config import DPOConfig
from training.dpo.logps import TokenLogps, causal_of

MetricsCallback = Callable[[dict[str, float]], None]
ProgressCallback = Callable[[str], None]  # a line on what the run is doing between steps
Model = Any  # a transformers PreTrainedModel, a peft PeftModel, or either wrapped in DDP


class Processes:
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


def optimizer_load(
    scorer: TokenLogps, optimizer: torch.optim.Optimizer, state: dict[str, Any], *, fsdp: bool
) -> None:
    if not fsdp:
        optimizer.load_state_dict(state)
        return
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

    set_optimizer_state_dict(scorer, optimizer, state, options=StateDictOptions(full_state_dict=True))


def kl_checker(
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
