from __future__ import annotations

from typing import Any

from django import forms

from generation.models import Policy
from training.dpo.config import LOSSES


class StartRoundForm(forms.Form):
    """What staff choose when starting a round from the dashboard; the rest keeps DPOConfig's defaults."""

    policy = forms.ModelChoiceField(queryset=Policy.objects.order_by("-id"), help_text="the starting policy")
    loss = forms.ChoiceField(choices=[(loss, loss) for loss in LOSSES], initial="sigmoid")
    beta = forms.FloatField(initial=0.1, min_value=1e-6)
    lr = forms.FloatField(initial=1e-5, min_value=0, label="Learning rate")
    epochs = forms.IntegerField(initial=1, min_value=1, max_value=100)
    batch_size = forms.IntegerField(initial=4, min_value=1, max_value=1024)
    lora_r = forms.IntegerField(initial=0, min_value=0, max_value=1024, label="LoRA rank (0: full)")
    max_length = forms.IntegerField(initial=512, min_value=16, label="Max tokens per pair side")
    then_generate = forms.IntegerField(
        initial=8, min_value=0, label="Then generate for N prompts", help_text="0: train only"
    )
    samples = forms.IntegerField(initial=3, min_value=2, max_value=16, label="Answers per prompt")
    max_new_tokens = forms.IntegerField(initial=160, min_value=1, max_value=8192)
    overlap = forms.IntegerField(initial=2, min_value=1, max_value=20, label="Judgments per comparison")

    def round_options(self) -> dict[str, Any]:
        """Keyword arguments for ``round_start`` from the cleaned form."""
        data = self.cleaned_data
        hyperparameters = {
            key: data[key] for key in ("loss", "beta", "lr", "epochs", "batch_size", "max_length")
        }
        if data["lora_r"]:
            hyperparameters["lora_r"] = data["lora_r"]
        return {
            "policy": data["policy"],
            "hyperparameters": hyperparameters,
            "then_generate": data["then_generate"],
            "generation": {
                "samples": data["samples"],
                "max_new_tokens": data["max_new_tokens"],
                "overlap": data["overlap"],
                "pairs": "all",
            },
        }
