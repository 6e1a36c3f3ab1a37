from django.contrib import admin

from training.models import Evaluation, RoundMetric, TrainingRound


@admin.register(TrainingRound)
class TrainingRoundAdmin(admin.ModelAdmin):
    list_display = [
        "id",
        "policy",
        "status",
        "pairs",
        "output_policy",
        "campaign",
        "eval_campaign",
        "created_at",
    ]
    list_filter = ["status"]
    search_fields = ["policy__name", "output_policy__name", "error"]
    raw_id_fields = ["policy", "reference", "output_policy", "campaign", "eval_campaign", "started_by"]


@admin.register(Evaluation)
class EvaluationAdmin(admin.ModelAdmin):
    list_display = ["comparison", "policy", "opponent", "training_round"]
    list_filter = ["comparison__campaign"]
    search_fields = ["policy__name", "opponent__name"]
    raw_id_fields = ["comparison", "policy", "opponent", "training_round"]


@admin.register(RoundMetric)
class RoundMetricAdmin(admin.ModelAdmin):
    list_display = ["round", "step", "created_at"]
    raw_id_fields = ["round"]
