"""What a training run is made of, before its first step: the processes (torchrun), the dtype, the
tokenizer, the model behind its log-prob head, the tokenized data; and at its end, a checkpoint's
weights restored and a LoRA adapter merged."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from config.invalid_input import InvalidInput
from training.dpo.attention import varlen_enable
from training.dpo.checkpoint import STATE_FILE
from training.dpo.config import UNPAIRED, DPOConfig
from training.dpo.data import (
    PAIR_SIDES,
    TokenizedPair,
    examples_read,
    examples_tokenize,
    pairs_read,
    pairs_tokenize,
)
from training.dpo.logps import TokenLogps, causal_of

MetricsCallback = Callable[[dict[str, float]], None]
ProgressCallback = Callable[[str], None]  # a line on what the run is doing between steps
Model = Any  # a transformers PreTrainedModel, a peft PeftModel, or either wrapped in DDP


MAX_SMOOTHING = 0.49  # robust DPO divides by 1 - 2ε: a pair with confidence at or below 0.5 is capped here


def processes_init() -> tuple[int, int, torch.device]:
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


def dtype_for(cfg: DPOConfig, device: torch.device) -> torch.dtype:
    if cfg.dtype == "fp32":
        return torch.float32
    if cfg.dtype == "bf16":
        return torch.bfloat16
    return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else torch.float32


def tokenizer_load(path: str) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def model_load(cfg: DPOConfig, dtype: torch.dtype, resume_from: Path | None) -> Model:
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


def decoder_layers(causal: Any) -> list[nn.Module]:
    """The decoder blocks of a transformers causal LM (what FSDP shards and compile compiles)."""
    decoder = getattr(causal, causal.base_model_prefix)
    layers = getattr(decoder, "layers", None) or getattr(decoder, "h", None)
    if layers is None:
        raise InvalidInput(f"{type(causal).__name__}: no decoder layers found to shard")
    return list(layers)


def scorer_make(cfg: DPOConfig, model: Model, device: torch.device, *, fsdp: bool) -> TokenLogps:
    """``model`` behind the log-prob head, packed if it can be, on ``device`` (or sharded onto it)."""
    causal = causal_of(model)
    causal.config.use_cache = False
    packed = cfg.padding_free and varlen_enable(causal)
    # SFT's rows are single answers, not [chosen; rejected] halves: nothing to share
    scorer = TokenLogps(model, packed=packed, share_prompt=cfg.share_prompt and cfg.loss != "sft")
    if fsdp:  # each block its own shard group, the rest (embeddings, head, norm) the root's
        from torch.distributed.fsdp import fully_shard

        for layer in decoder_layers(causal):
            fully_shard(layer)
        fully_shard(scorer)
    else:
        scorer.to(device)
    return scorer


@dataclass
class TrainData:
    """Every example, validated and tokenised before a model is loaded (a bad file fails in seconds)."""

    data: list[TokenizedPair]  # pairs; KTO and SFT: single answers
    eval_data: list[TokenizedPair]  # held-out pairs (preference accuracy before and after)
    sides: tuple[str, ...]  # the token rows each example lays down (SFT: its answer alone)
    smoothing: Tensor | None = None  # robust with confidence_smoothing: each pair's label smoothing
    desirable: Tensor | None = None  # KTO: each answer's label


def data_prepare(cfg: DPOConfig, tokenizer: Any) -> TrainData:
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


def weights_restore(cfg: DPOConfig, model: Model, checkpoint: Path, dtype: torch.dtype) -> int:
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


def adapter_merged(
    cfg: DPOConfig, model: Model, adapter_dir: Path, dtype: torch.dtype, *, sharded: bool
) -> Model:
    """The LoRA adapter merged into its base. Sharded weights are not whole in any process, so the
    base is loaded again and the saved adapter merged into it."""
    if not sharded:
        return model.merge_and_unload()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(cfg.policy_path, dtype=dtype)
    return PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
