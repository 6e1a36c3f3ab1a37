from django.contrib import admin

from generation.models import Policy, Prompt, Response, Tag


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


@admin.register(Policy)
class PolicyAdmin(admin.ModelAdmin):
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
