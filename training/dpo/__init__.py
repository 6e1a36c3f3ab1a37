"""prefloop's DPO trainer: pure torch + transformers (+ peft for LoRA); imports no Django.

Run it alone (``python -m training.dpo``), under ``torchrun`` for several GPUs, or from the web app's
worker through ``train(cfg, on_metrics=...)``. ``train`` is imported on first use, so reading the
configuration (``DPOConfig``, ``LOSSES``) loads no torch: the web process reads it for its forms.
"""

from typing import Any

from training.dpo.config import LOSSES, DPOConfig

__all__ = ["LOSSES", "DPOConfig", "train"]


def __getattr__(name: str) -> Any:
    if name == "train":
        from training.dpo.loop import train

        return train
    raise AttributeError(f"module 'training.dpo' has no attribute {name!r}")
