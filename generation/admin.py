from pathlib import Path

from django import forms
from django.contrib import admin

from generation.models import LocationKind, Policy, Prompt, Response, Tag
from generation.services import policy_location_kind, policy_location_problem


@admin.register(Tag)
class TagAdmin(admin.ModelAdmin):
    search_fields = ["name"]


@admin.register(Prompt)
class PromptAdmin(admin.ModelAdmin):
    list_display = ["id", "__str__", "split", "source", "created_at"]
    list_filter = ["split", "tags", "source"]
    search_fields = ["text", "messages", "content_hash", "source"]
    autocomplete_fields = ["tags"]
    readonly_fields = ["content_hash", "created_at"]
    date_hierarchy = "created_at"


class PolicyForm(forms.ModelForm):
    """A location typed here gets register_policy's checks (it loads now, nothing is downloaded), and
    its kind from what it is: the admin saved any path before, and a round then failed loading it."""

    class Meta:
        model = Policy
        fields = [
            "name",
            "location",
            "adapter",
            "parent",
            "notes",
            "held_back",
            "held_back_reason",
        ]

    def clean(self) -> dict:
        cleaned = super().clean()
        location, adapter = cleaned.get("location", ""), cleaned.get("adapter", "")
        if not location:
            return cleaned
        if "location" in self.changed_data or "adapter" in self.changed_data:
            problem = policy_location_problem(location=location, adapter=adapter)
            if problem:
                raise forms.ValidationError({"location": problem})
        self.instance.location_kind = kind = policy_location_kind(location)
        if kind != LocationKind.HUB:
            cleaned["location"] = str(Path(location).resolve())
        return cleaned


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
    form = PolicyForm
    readonly_fields = ["location_kind"]
    list_display = ["name", "location_kind", "location", "adapter", "parent", "created_at"]
    list_filter = ["location_kind"]
    search_fields = ["name", "location", "notes"]
    raw_id_fields = ["parent"]


@admin.register(Response)
class ResponseAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "policy", "token_count", "finish_reason", "seed", "created_at"]
    list_filter = ["policy", "finish_reason"]
    search_fields = ["text", "prompt__text"]
    raw_id_fields = ["prompt"]
    list_select_related = ["prompt", "policy"]
