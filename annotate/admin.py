from django.contrib import admin

from annotate.models import Assignment, Comparison, Guideline, Judgment, JudgmentRevision


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
    readonly_fields = ["created_at"]
    raw_id_fields = ["annotator"]


@admin.register(Comparison)
class ComparisonAdmin(admin.ModelAdmin):
    list_display = ["id", "prompt", "round_label", "kind", "overlap", "gold_answer", "created_at"]
    list_filter = ["kind", "round_label", "prompt__split"]
    search_fields = ["prompt__text", "round_label", "response_a__text", "response_b__text"]
    raw_id_fields = ["prompt", "response_a", "response_b"]
    list_select_related = ["prompt"]
    inlines = [JudgmentInline]


@admin.register(Judgment)
class JudgmentAdmin(admin.ModelAdmin):
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
    list_filter = ["choice", "source", "strength", "left", "comparison__kind", "comparison__round_label"]
    search_fields = ["annotator__username", "rationale", "comparison__id"]
    raw_id_fields = ["comparison", "annotator"]
    list_select_related = ["comparison", "annotator"]
    readonly_fields = ["created_at", "updated_at"]
    date_hierarchy = "created_at"


@admin.register(Assignment)
class AssignmentAdmin(admin.ModelAdmin):
    list_display = ["comparison", "annotator", "left", "served_at", "expires_at", "skipped_at"]
    list_filter = ["left"]
    search_fields = ["annotator__username", "comparison__id"]
    raw_id_fields = ["comparison", "annotator"]


@admin.register(Guideline)
class GuidelineAdmin(admin.ModelAdmin):
    list_display = ["__str__", "updated_by", "created_at"]
    search_fields = ["text"]
    readonly_fields = ["created_at"]


@admin.register(JudgmentRevision)
class JudgmentRevisionAdmin(admin.ModelAdmin):
    list_display = ["judgment", "choice", "strength", "changed_at"]
    list_filter = ["choice"]
    search_fields = ["judgment__annotator__username", "rationale"]
    raw_id_fields = ["judgment"]
