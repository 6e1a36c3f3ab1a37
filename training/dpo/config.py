from __future__ import annotations

from dataclasses import dataclass

from config.invalid_input import InvalidInput

# Losses, each from its paper (see losses.py). The reference-free ones load no reference model.
LOSSES = ("sigmoid", "ipo", "hinge", "robust", "dpop", "simpo", "orpo", "kto", "sft")
REFERENCE_FREE = ("simpo", "orpo", "sft")
# kto trains on unpaired answers (desirable or not; pairs give one of each), sft on target answers alone
UNPAIRED = ("kto", "sft")
SHARDING = ("ddp", "fsdp")  # how several processes split the work under torchrun
DTYPES = ("auto", "bf16", "fp32")  # auto: bf16 on a GPU that supports it, else fp32


@dataclass(frozen=True)
class DPOConfig:
    policy_path: str  # the starting model: a Hugging Face directory (or hub id already cached)
    data_path: str  # JSONL preference pairs, as export_preferences writes them
    output_dir: str
    ref_path: str | None = None  # reference model; None: the starting model itself
    eval_data_path: str | None = None  # held-out pairs: preference accuracy before and after
    loss: str = "sigmoid"
    beta: float = 0.1  # how hard the reference holds the policy back (ORPO: the odds-ratio weight)
    label_smoothing: float = 0.0  # robust (cDPO): assumed share of flipped labels, < 0.5
    # robust: each pair's own share, 1 - its 'confidence' (the export's posterior that chosen beats
    # rejected), capped below 0.5; pairs without one take label_smoothing
    confidence_smoothing: bool = False
    dpop_lambda: float = 50.0  # DPO-Positive: penalty on the chosen log-ratio falling below 0
    simpo_gamma: float = 0.5  # SimPO: target reward margin
    desirable_weight: float = 1.0  # KTO: weight of a desirable answer's loss (λ_D)
    undesirable_weight: float = 1.0  # KTO: weight of an undesirable one's (λ_U)
    rpo_alpha: float = 0.0  # RPO (Pang et al. 2024): weight of the chosen answer's per-token NLL, added
    lr: float | None = None  # None: 5e-7 for full fine-tuning, 5e-5 with LoRA
    epochs: int = 1
    batch_size: int = 4  # pairs per micro-batch (per process)
    grad_accum: int = 1
    max_length: int = 1024  # prompt + response tokens
    max_prompt_length: int | None = None  # prompt tokens kept (its end); None: as many as fit
    warmup_ratio: float = 0.0
    max_grad_norm: float = 1.0
    lora_r: int = 0  # 0: full fine-tuning
    lora_alpha: int | None = None  # None: 2 * lora_r
    merge: bool = False  # with LoRA: also write the merged model
    seed: int = 42
    dtype: str = "auto"  # auto: bf16 on a GPU that supports it, else fp32
    save_steps: int = 0  # checkpoint every N optimizer steps (0: at the end of each epoch)
    resume: bool = False  # continue from the last complete checkpoint in output_dir
    max_steps: int = 0  # stop after N optimizer steps (0: run all epochs)
    # pack each batch's rows into one (where the model allows it; else length-grouped batches)
    padding_free: bool = True
    share_prompt: bool = True  # packed: each pair's prompt once, its two responses after it
    # recompute activations in the backward: about half the memory on a CPU for ~10% more time, a
    # third more compute on a GPU (docs/benchmarks.md)
    gradient_checkpointing: bool = False
    sharding: str = "ddp"  # under torchrun: ddp (a whole model per process) or fsdp (parameters sharded)
    compile: bool = False  # torch.compile each decoder layer
    # Early stop: every kl_every steps the policy answers the prompts of kl_prompts_path and KL(policy ‖
    # reference) per token is estimated on those answers (kl.py); past kl_budget the run stops and
    # keeps the last checkpoint within it (checkpoints are then written at the checks, not per epoch).
    kl_every: int = 0  # 0: never
    kl_budget: float = 0.0  # nats per token
    kl_prompts_path: str | None = None  # JSONL {"prompt": str | [messages]}: held-out prompts
    kl_max_new_tokens: int = 128  # sampling of the answers the estimate is made on
    kl_temperature: float = 1.0
    kl_top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise InvalidInput(f"loss must be one of {', '.join(LOSSES)} (got {self.loss!r})")
        if self.beta <= 0:
            raise InvalidInput(f"beta must be positive (got {self.beta})")
        if not 0.0 <= self.label_smoothing < 0.5:
            raise InvalidInput(f"label_smoothing must be in [0, 0.5) (got {self.label_smoothing})")
        if self.rpo_alpha < 0:
            raise InvalidInput(f"rpo_alpha must be >= 0 (got {self.rpo_alpha})")
        if self.rpo_alpha and self.loss in UNPAIRED:
            raise InvalidInput(f"rpo_alpha applies to pair losses, not {self.loss}")
        if self.desirable_weight <= 0 or self.undesirable_weight <= 0:
            raise InvalidInput("desirable_weight and undesirable_weight must be positive")
        if self.loss == "kto" and self.batch_size < 2:
            raise InvalidInput("kto needs batch_size >= 2: its KL estimate pairs answers within a batch")
        if (self.label_smoothing or self.confidence_smoothing) and self.loss != "robust":
            raise InvalidInput("label_smoothing applies to the 'robust' loss only")
        for name in ("epochs", "batch_size", "grad_accum", "max_length"):
            if getattr(self, name) < 1:
                raise InvalidInput(f"{name} must be at least 1 (got {getattr(self, name)})")
        if self.max_prompt_length is not None and not 0 < self.max_prompt_length < self.max_length:
            raise InvalidInput(
                f"max_prompt_length must be between 1 and max_length - 1 (got {self.max_prompt_length})"
            )
        if self.dtype not in DTYPES:
            raise InvalidInput(f"dtype must be one of {', '.join(DTYPES)} (got {self.dtype!r})")
        if self.sharding not in SHARDING:
            raise InvalidInput(f"sharding must be one of {', '.join(SHARDING)} (got {self.sharding!r})")
        if self.lora_r < 0:
            raise InvalidInput(f"lora_r must be >= 0 (got {self.lora_r})")
        if self.merge and not self.lora_r:
            raise InvalidInput("merge applies to LoRA training only (set lora_r)")
        if self.kl_every < 0:
            raise InvalidInput(f"kl_every must be >= 0 (got {self.kl_every})")
        if self.kl_every and not (self.kl_budget > 0 and self.kl_prompts_path):
            raise InvalidInput("kl_every needs kl_budget > 0 and kl_prompts_path (the held-out prompts)")
        if self.kl_every and (
            self.kl_max_new_tokens < 1 or self.kl_temperature < 0 or not 0 < self.kl_top_p <= 1
        ):
            raise InvalidInput("kl_max_new_tokens must be >= 1, kl_temperature >= 0 and kl_top_p in (0, 1]")
        if self.kl_every and self.sharding == "fsdp":
            raise InvalidInput("kl_every (the early stop) needs whole models per process: use ddp, not fsdp")

    @property
    def reference_free(self) -> bool:
        return self.loss in REFERENCE_FREE

    @property
    def learning_rate(self) -> float:
        if self.lr is not None:
            return self.lr
        return 5e-5 if self.lora_r else 5e-7
