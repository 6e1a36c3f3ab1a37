from __future__ import annotations

from typing import Any

from django import forms

from annotate.models import AIJudge
from generation.models import Policy
from training.dpo.config import UNPAIRED
from training.options import GENERATION, GUARDS, TRAINING, Option
from training.rounds import RoundRequest

# The settings the start form shows (names distinct across the two groups); the rest keep their
# defaults (training.options, the one source).
FORM_TRAINING = (
    "loss",
    "beta",
    "lr",
    "epochs",
    "batch_size",
    "lora_r",
    "max_length",
    "rpo_alpha",
    "confidence_smoothing",
    "kl_every",
)
FORM_GENERATION = ("samples", "max_new_tokens", "pairs", "overlap", "budget")
LABELS = {
    "rpo_alpha": "RPO weight (chosen answer's NLL)",
    "kl_every": "Early stop: check the held-out KL every N steps (0: never)",
    "kl_budget": "KL budget (nats/token)",
    "fluency_limit": "Fluency limit (× the base's NLL)",
    "outlier_limit": "Outlier limit (share)",
    "lr": "Learning rate",
    "lora_r": "LoRA rank (0: full)",
    "max_length": "Max tokens per pair side",
    "samples": "Answers per prompt",
    "overlap": "Judgments per comparison",
}


def _field(option: Option) -> forms.Field:
    label = LABELS.get(option.name, option.name.replace("_", " ").capitalize())
    common: dict[str, Any] = {"label": label, "help_text": option.help, "initial": option.default}
    if option.choices:
        return forms.ChoiceField(choices=[(c, c) for c in option.choices], required=False, **common)
    if option.kind is bool:
        return forms.BooleanField(required=False, **common)
    # Left empty, a setting keeps its default (training.options): the form sends only what is set.
    if option.kind is float:
        return forms.FloatField(min_value=0, required=False, **common)
    return forms.IntegerField(min_value=0, required=False, **common)


class StartRoundForm(forms.Form):
    """What staff choose when starting a round from the dashboard; fields, defaults and help come
    from ``training.options``."""

    policy = forms.ModelChoiceField(queryset=Policy.objects.order_by("-id"), help_text="the starting policy")
    reference_mode = forms.ChoiceField(
        choices=[("parent", "the starting policy (rolling)"), ("base", "the base of its lineage (anchored)")],
        required=False,
        label="Reference",
    )
    aggregation = forms.ChoiceField(
        choices=[
            ("majority", "majority vote"),
            ("dawid-skene", "weighted by annotator reliability (Dawid-Skene)"),
        ],
        required=False,
        label="Labels",
        help_text="how each comparison's judgments become its label",
    )
    ai_judges = forms.ModelMultipleChoiceField(
        queryset=AIJudge.objects.order_by("name"),
        required=False,
        label="AI judges' verdicts too",
        help_text="none: people's judgments only; each judge's verdict is one more vote (weighed by its "
        "reliability under Dawid-Skene)",
    )
    then_generate = forms.IntegerField(
        initial=8, min_value=0, label="Then generate for N prompts", help_text="0: train only"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for option in TRAINING:
            if option.name in FORM_TRAINING:
                self.fields[option.name] = _field(option)
        for option in GENERATION:
            if option.name in FORM_GENERATION:
                self.fields[option.name] = _field(option)
        for option in GUARDS:
            self.fields[option.name] = _field(option)
            self.fields[option.name].required = False

    def round_request(self) -> RoundRequest:
        """The round the cleaned form asks for (only what was set; the rest keeps its default)."""
        data = self.cleaned_data
        hyperparameters = {  # an unticked switch, like an empty field, keeps its default
            name: data[name]
            for name in FORM_TRAINING
            if data.get(name) not in (None, "") and data[name] is not False
        }
        if not hyperparameters.get("lora_r"):
            hyperparameters.pop("lora_r", None)
        if (
            hyperparameters.get("loss") in UNPAIRED
        ):  # the RPO field's default is for pairs; KTO and SFT have none
            hyperparameters.pop("rpo_alpha", None)
        generation = {name: data[name] for name in FORM_GENERATION if data.get(name) not in (None, "")}
        guards = {
            option.name: data[option.name] for option in GUARDS if data.get(option.name) not in (None, "")
        }
        return RoundRequest(
            policy=data["policy"],
            guards=guards,
            reference_mode=data.get("reference_mode") or "",
            aggregation=data.get("aggregation") or "majority",
            ai_judges=tuple(data.get("ai_judges") or ()),
            hyperparameters=hyperparameters,
            then_generate=data["then_generate"],
            generation=generation,
        )
