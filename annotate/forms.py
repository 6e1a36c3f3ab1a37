from __future__ import annotations

from django import forms
from django.contrib.auth import get_user_model

from annotate.models import Campaign, Task
from generation.models import Policy


class CampaignForm(forms.ModelForm):
    """What staff set on a campaign; saved through ``annotate.services.campaigns``, not ``save()``."""

    members = forms.ModelMultipleChoiceField(
        queryset=get_user_model().objects.filter(is_active=True).order_by("username"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        help_text="Who may judge it when it is not open to every annotator.",
    )
    arena_policies = forms.ModelMultipleChoiceField(
        queryset=Policy.objects.order_by("-id"),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Arena pool",
        help_text="Arena: the policies that meet, two at a time (a round's new policy joins the pools "
        "its parent is in).",
    )

    class Meta:
        model = Campaign
        fields = [
            "name",
            "task",
            "status",
            "priority",
            "overlap",
            "gold_rate",
            "pair_budget",
            "adjudicate",
            "suggest_judge",
            "open_to_all",
            "members",
            "arena_policies",
            "guidelines",
        ]
        widgets = {"guidelines": forms.Textarea(attrs={"rows": 12})}

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["task"].required = False  # left out: pairs (or, editing, what it was)

    def clean_task(self) -> str:
        return self.cleaned_data.get("task") or (self.instance.task if self.instance.pk else Task.PAIRS)

    def values(self) -> dict:
        """The cleaned fields a service takes (members apart)."""
        return {
            name: self.cleaned_data[name]
            for name in self.Meta.fields
            if name not in ("members", "arena_policies")
        }
