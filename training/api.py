"""Training rounds over the REST API (staff): list, start (queued for a db_worker), watch, cancel."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.models import AIJudge
from annotate.selectors import AGGREGATIONS
from config.errors import object_or_404
from config.permissions import StaffOnly
from generation.models import Policy
from training.errors import RoundNotFound
from training.models import TrainingRound
from training.options import GENERATION_DEFAULTS, GUARD_DEFAULTS, HYPERPARAMETERS
from training.rounds import RoundRequest, round_cancel
from training.selectors import heldout_least_likely
from training.tasks import round_retry, round_start


class TrainingRoundSerializer(serializers.ModelSerializer):
    policy = serializers.SlugRelatedField(read_only=True, slug_field="name")
    reference = serializers.SlugRelatedField(read_only=True, slug_field="name")
    output_policy = serializers.SlugRelatedField(read_only=True, slug_field="name")
    started_by = serializers.SlugRelatedField(read_only=True, slug_field="username")
    campaign = serializers.SlugRelatedField(read_only=True, slug_field="name")
    eval_campaign = serializers.SlugRelatedField(read_only=True, slug_field="name")
    ai_judges = serializers.SlugRelatedField(slug_field="name", many=True, read_only=True)
    silent = serializers.BooleanField(
        source="is_silent",
        read_only=True,
        help_text="running or following up with no sign of life from its worker for PREFLOOP_ROUND_STALE_SECONDS",
    )

    class Meta:
        model = TrainingRound
        fields = [
            "id",
            "policy",
            "reference",
            "status",
            "cancel_requested",
            "following_up",
            "silent",
            "hyperparameters",
            "min_pairs",
            "then_generate",
            "generation",
            "aggregation",
            "ai_judges",
            "guards",
            "drift",
            "campaign",
            "eval_campaign",
            "data_file",
            "data_sha256",
            "pairs",
            "excluded",
            "steps_total",
            "output_policy",
            "error",
            "task_id",
            "started_by",
            "created_at",
            "started_at",
            "finished_at",
            "heartbeat_at",
        ]


class UnlikelyAnswerSerializer(serializers.Serializer):
    prompt_id = serializers.IntegerField(source="answer.prompt_id")
    prompt = serializers.CharField(source="answer.prompt", help_text="its first line")
    answer = serializers.CharField(source="answer.text")
    base_nll = serializers.FloatField(source="answer.base_nll", help_text="nats per token under the base")
    beyond_p95 = serializers.BooleanField(help_text="beyond the base's own 95th NLL percentile")
    base_answer = serializers.CharField(source="base_answer.text", default=None)
    base_answer_nll = serializers.FloatField(source="base_answer.base_nll", default=None)


class TrainingRoundDetailSerializer(TrainingRoundSerializer):
    metrics = serializers.SerializerMethodField()
    log = serializers.CharField(read_only=True)
    least_likely = serializers.SerializerMethodField(
        help_text="the new policy's held-out answers least likely under the base, beside the base's"
    )

    class Meta(TrainingRoundSerializer.Meta):
        fields = [*TrainingRoundSerializer.Meta.fields, "metrics", "log", "least_likely"]

    def get_metrics(self, obj: TrainingRound) -> list[dict]:
        return [values for values in obj.metrics.values_list("values", flat=True)]

    @extend_schema_field(UnlikelyAnswerSerializer(many=True))
    def get_least_likely(self, obj: TrainingRound) -> list[dict]:
        if obj.output_policy is None or not obj.drift:
            return []
        return UnlikelyAnswerSerializer(heldout_least_likely(policy=obj.output_policy), many=True).data


class RoundStartSerializer(serializers.Serializer):
    policy = serializers.SlugRelatedField(queryset=Policy.objects.all(), slug_field="name")
    reference = serializers.SlugRelatedField(queryset=Policy.objects.all(), slug_field="name", required=False)
    hyperparameters = serializers.DictField(
        required=False, help_text=f"DPO settings (training.options): {', '.join(HYPERPARAMETERS)}"
    )
    min_pairs = serializers.IntegerField(required=False, min_value=1)
    reference_mode = serializers.ChoiceField(
        choices=["parent", "base"], required=False, help_text="parent (rolling, default) or base (anchored)"
    )
    aggregation = serializers.ChoiceField(
        choices=list(AGGREGATIONS),
        required=False,
        help_text="how each comparison's judgments become its label: majority (default) or dawid-skene",
    )
    ai_judges = serializers.SlugRelatedField(
        queryset=AIJudge.objects.all(),
        slug_field="name",
        many=True,
        required=False,
        help_text="AI judges whose verdicts count beside people's (by name; none: people's only)",
    )
    then_generate = serializers.IntegerField(required=False, min_value=0, default=0)
    guards = serializers.DictField(
        required=False,
        help_text="a new policy beyond any is held back: "
        + ", ".join(f"{name} (default {value})" for name, value in GUARD_DEFAULTS.items()),
    )
    generation = serializers.DictField(
        required=False,
        help_text="sampling for then_generate and the held-out answers: "
        + ", ".join(f"{name} (default {value})" for name, value in GENERATION_DEFAULTS.items()),
    )


class RoundListApi(StaffOnly, generics.ListAPIView):
    """Training rounds, newest first (staff). POST starts one: it is queued for a db_worker."""

    serializer_class = TrainingRoundSerializer
    queryset = TrainingRound.objects.select_related(
        "policy", "reference", "output_policy", "started_by", "campaign", "eval_campaign"
    )

    @extend_schema(request=RoundStartSerializer, responses={201: TrainingRoundSerializer})
    def post(self, request: Request) -> Response:
        data = RoundStartSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        fields = {**data.validated_data, "ai_judges": tuple(data.validated_data.get("ai_judges", ()))}
        started = round_start(request=RoundRequest(**fields), started_by=request.user)
        return Response(TrainingRoundSerializer(started).data, status=201)


class RoundDetailApi(StaffOnly, generics.RetrieveAPIView):
    """One round with its per-step metrics and log tail (staff)."""

    serializer_class = TrainingRoundDetailSerializer
    queryset = RoundListApi.queryset

    def get_object(self) -> TrainingRound:
        return object_or_404(self.get_queryset(), error=RoundNotFound, what="round", pk=self.kwargs["pk"])


class RoundRetryApi(StaffOnly, APIView):
    """Start a failed or cancelled round again with the same policy, reference and settings (staff):
    a new queued round (201)."""

    @extend_schema(request=None, responses={201: TrainingRoundSerializer})
    def post(self, request: Request, pk: int) -> Response:
        training_round = object_or_404(TrainingRound, error=RoundNotFound, what="round", pk=pk)
        retried = round_retry(training_round=training_round, started_by=request.user)
        return Response(TrainingRoundSerializer(retried).data, status=201)


class RoundCancelApi(StaffOnly, APIView):
    """Cancel a round: a queued one at once, a running one at its next step (staff)."""

    @extend_schema(request=None, responses={200: TrainingRoundSerializer})
    def post(self, request: Request, pk: int) -> Response:
        training_round = object_or_404(TrainingRound, error=RoundNotFound, what="round", pk=pk)
        return Response(TrainingRoundSerializer(round_cancel(training_round=training_round)).data)
