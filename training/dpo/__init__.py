"""prefloop's DPO trainer: pure torch + transformers (+ peft for LoRA); imports no Django.

Run it alone (``python -m training.dpo``), under ``torchrun`` for several GPUs, or from the web app's
worker through ``train(cfg, on_metrics=...)``.
"""

from training.dpo.config import LOSSES, DPOConfig
from training.dpo.loop import train

__all__ = ["LOSSES", "DPOConfig", "train"]
