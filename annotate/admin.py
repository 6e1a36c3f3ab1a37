from django.contrib import admin

from annotate.models import (
    AIJudge,
    AIVerdict,
    Assignment,
    Campaign,
    Comparison,
    JudgeRun,
    Judgment,
    JudgmentRevision,
)


class JudgmentInline(admin.TabularInline):
    model = Judgment
    extra = 0
    fields = [
        "annotator",
        "choice",
        "strength",
        "left",
        "time_on_task_ms",
        "source",
        "rationale",
        "created_at",
    ]
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "campaign", "kind", "overlap", "gold_answer", "created_at"]
    list_filter = ["kind", "campaign", "prompt__split"]
    search_fields = ["prompt__text", "campaign__name", "response_a__text", "response_b__text"]
    raw_id_fields = ["prompt", "response_a", "response_b"]
    list_select_related = ["prompt"]
    inlines = [JudgmentInline]


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable, never added, changed or deleted here: a judgment is given on the judging page, the API
    or an import, and changed only by its annotator through the revision path (the previous version
    kept)."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Judgment)
class JudgmentAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "comparison",
        "annotator",
        "choice",
        "strength",
        "left",
        "time_on_task_ms",
        "source",
        "updated_at",
    ]
    list_filter = ["choice", "source", "strength", "left", "comparison__kind", "comparison__campaign"]
    search_fields = ["annotator__username", "rationale", "comparison__id"]
    list_select_related = ["comparison", "annotator"]
    date_hierarchy = "created_at"


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["comparison", "annotator", "left", "served_at", "expires_at", "skipped_at"]
    list_filter = ["left"]
    search_fields = ["annotator__username", "comparison__id"]
    raw_id_fields = ["comparison", "annotator"]


@admin.register(Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "priority", "overlap", "gold_rate", "open_to_all", "created_at"]
    list_filter = ["status", "open_to_all"]
    search_fields = ["name", "guidelines"]
    filter_horizontal = ["members"]


@admin.register(JudgmentRevision)
class JudgmentRevisionAdmin(ReadOnlyAdmin):
    list_display = ["judgment", "choice", "strength", "changed_at"]
    list_filter = ["choice"]
    search_fields = ["judgment__annotator__username", "rationale"]


@admin.register(AIJudge)
class AIJudgeAdmin(admin.ModelAdmin):
    """A judge's endpoint and rubric may be edited here (registered with ``register_judge``); its
    key is never stored, only the name of the variable holding it."""

    list_display = ["name", "policy", "url", "model", "api_key_env", "created_at"]
    search_fields = ["name", "model", "url"]


@admin.register(AIVerdict)
class AIVerdictAdmin(ReadOnlyAdmin):
    list_display = ["id", "judge", "comparison", "choice", "probability_first", "consistent", "created_at"]
    list_filter = ["judge", "consistent", "comparison__campaign"]
    raw_id_fields = ["comparison"]


@admin.register(JudgeRun)
class JudgeRunAdmin(ReadOnlyAdmin):
    list_display = ["id", "judge", "campaign", "status", "done", "total", "created_at", "finished_at"]
    list_filter = ["status", "judge"]
