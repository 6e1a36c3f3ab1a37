from __future__ import annotations

import copy
import dataclasses
import json
from typing import ClassVar

from django.contrib.auth import get_user_model
from django.db.models import Count, QuerySet
from django.http import HttpResponse, StreamingHttpResponse
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import generics, serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from annotate.datacard import datacard_render, datacard_stats
from annotate.errors import CampaignNotFound
from annotate.models import (
    AIJudge,
    Assignment,
    Campaign,
    CampaignStatus,
    Comparison,
    Judgment,
    Kind,
    Side,
    Strength,
    Verdict,
)
from annotate.preference_files import preference_drafts_from_objects, preference_drafts_read
from annotate.selectors import (
    AGGREGATIONS,
    DATASET_TYPES,
    EXPORT_FORMATS,
    EXPORT_SPLITS,
    ExportReport,
    campaign_visible_to,
    campaigns_open_for,
    dataset_rows,
    export_comparisons,
    judgments_visible_to,
)
from annotate.services.ai_judges import judge_agreement_with_people, judges_named
from annotate.services.campaigns import (
    campaign_create,
    campaign_get_or_create,
    campaign_members_set,
    campaign_update,
)
from annotate.services.imports import preferences_import
from annotate.services.judgments import ScreenAnswer, judgment_from_screen
from annotate.services.queue import comparison_assign_next
from config.errors import NotAllowed, object_or_404
from config.parsers import JSONParser
from config.permissions import StaffOnly
from generation.api import drafts_from_request
from generation.models import Split


class ComparisonSerializer(serializers.ModelSerializer):
    """The staff view: everything, policies included."""

    prompt = serializers.JSONField(source="prompt.as_messages", read_only=True)
    first = serializers.CharField(source="response_a.text", read_only=True)
    second = serializers.CharField(source="response_b.text", read_only=True)
    first_policy = serializers.CharField(source="response_a.policy", read_only=True, default=None)
    second_policy = serializers.CharField(source="response_b.policy", read_only=True, default=None)
    judgments = serializers.IntegerField(source="judgment_count", read_only=True)
    campaign = serializers.CharField(source="campaign.name", read_only=True)

    class Meta:
        model = Comparison
        fields = [
            "id",
            "prompt",
            "first",
            "second",
            "first_policy",
            "second_policy",
            "campaign",
            "kind",
            "overlap",
            "gold_answer",
            "judgments",
            "created_at",
        ]


class ComparisonListApi(StaffOnly, generics.ListAPIView):
    """All comparisons (staff); filter with ?campaign=NAME and ?kind=train|eval|gold."""

    serializer_class = ComparisonSerializer

    def get_queryset(self):
        comparisons = Comparison.objects.select_related(
            "prompt", "campaign", "response_a__policy", "response_b__policy"
        ).order_by("id")
        params = self.request.query_params
        if "campaign" in params:
            comparisons = comparisons.filter(campaign__name=params["campaign"])
        if "kind" in params:
            comparisons = comparisons.filter(kind=params["kind"])
        return comparisons


class AssignedComparisonSerializer(serializers.Serializer):
    """The annotator's blind view: the prompt and two texts in the order shown, nothing else (a thumbs
    item: its one answer as ``left``, ``right`` null; judge it good or bad)."""

    comparison = serializers.IntegerField(source="comparison.pk")
    campaign = serializers.CharField(source="comparison.campaign.name")
    guidelines = serializers.CharField(source="comparison.campaign.guidelines")
    prompt = serializers.JSONField(source="comparison.prompt.as_messages")
    task = serializers.CharField(source="comparison.campaign.task", help_text="pairs, thumbs or rankings")
    left = serializers.SerializerMethodField()
    right = serializers.SerializerMethodField()
    answers = serializers.SerializerMethodField()
    expires_at = serializers.DateTimeField()

    @extend_schema_field(serializers.ListField(child=serializers.CharField(), allow_null=True))
    def get_answers(self, assignment: Assignment) -> list[str] | None:
        """A ranking item's answers in the order shown (rank them with ``ranks`` in that order)."""
        comparison = assignment.comparison
        if not comparison.is_ranking:
            return None
        return [answer.text for answer in comparison.answers_in(assignment.order)]

    def _text(self, assignment: Assignment, side: str) -> str | None:
        comparison = assignment.comparison
        if side == Side.FIRST:
            return comparison.response_a.text
        return comparison.response_b.text if comparison.response_b is not None else None

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_left(self, assignment: Assignment) -> str | None:
        """A pair's left text, a thumbs item's one answer; null for a ranking item (see ``answers``)."""
        if assignment.comparison.is_ranking:
            return None
        return self._text(assignment, assignment.left)

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_right(self, assignment: Assignment) -> str | None:
        """A pair's right text; null for a thumbs or ranking item."""
        if assignment.comparison.is_ranking:
            return None
        return self._text(assignment, Side.SECOND if assignment.left == Side.FIRST else Side.FIRST)


class NextQuerySerializer(serializers.Serializer):
    campaign = serializers.CharField(required=False, help_text="only this campaign (its name)")


class ComparisonNextApi(APIView):
    """The next comparison for me, reserved for a while (204 when the queue is empty): from the
    campaigns open to me, highest priority first, or only from ``campaign``."""

    @extend_schema(request=NextQuerySerializer, responses={200: AssignedComparisonSerializer, 204: None})
    def post(self, request: Request) -> Response:
        query = NextQuerySerializer(data=request.data)
        query.is_valid(raise_exception=True)
        name = query.validated_data.get("campaign")
        campaign = (
            object_or_404(Campaign, error=CampaignNotFound, what="campaign", name=name) if name else None
        )
        if campaign is not None and not campaign_visible_to(campaign=campaign, annotator=request.user):
            # a members-only campaign is not there for outsiders: the same 404 as an unknown name
            raise CampaignNotFound(f"no campaign with name {name}")
        assignment = comparison_assign_next(annotator=request.user, campaign=campaign)
        if assignment is None:
            return Response(status=204)
        return Response(AssignedComparisonSerializer(assignment).data)


class FieldsBuiltOnce(serializers.ModelSerializer):
    """A ModelSerializer whose fields are built from the model once per class, not on every instance
    (DRF builds them again for each: a millisecond of every judgment's answer). Each instance gets its
    own copies, as a plain Serializer does with the fields it declares."""

    _fields_built: ClassVar[dict[str, serializers.Field]]

    def get_fields(self) -> dict[str, serializers.Field]:
        cls = type(self)
        if "_fields_built" not in cls.__dict__:
            cls._fields_built = super().get_fields()
        return copy.deepcopy(cls._fields_built)


class JudgmentSerializer(FieldsBuiltOnce):
    annotator = serializers.CharField(source="annotator.username", read_only=True)

    class Meta:
        model = Judgment
        fields = [
            "id",
            "comparison",
            "annotator",
            "choice",
            "strength",
            "rationale",
            "left",
            "time_on_task_ms",
            "source",
            "ranking",
            "edit",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


class JudgmentCreateSerializer(serializers.Serializer):
    comparison = serializers.IntegerField()
    verdict = serializers.ChoiceField(
        choices=Verdict.choices,
        required=False,
        default="",
        help_text="in screen terms, as served (pairs: left/right/tie/both_bad; thumbs: good/bad)",
    )
    ranks = serializers.ListField(
        child=serializers.IntegerField(),
        required=False,
        help_text="a ranking item: each answer's rank in the order served (1 best; equal ranks tie)",
    )
    strength = serializers.ChoiceField(choices=Strength.choices, required=False, default="")
    rationale = serializers.CharField(required=False, default="", allow_blank=True)
    edit = serializers.CharField(
        required=False,
        default="",
        allow_blank=True,
        trim_whitespace=False,
        help_text="an answer you wrote: it beats both shown (pairs) and trains SFT",
    )
    edit_of = serializers.ChoiceField(
        choices=["", "left", "right"],
        required=False,
        default="",
        help_text="the side whose answer the edit rewrites, in screen terms (blank: written from scratch)",
    )
    next = serializers.BooleanField(
        required=False,
        default=False,
        help_text="also serve my next comparison in the same request (returned as 'next'; null when none "
        "is left): one round trip per judgment instead of two",
    )


class JudgmentSubmittedSerializer(JudgmentSerializer):
    next = serializers.SerializerMethodField()

    class Meta(JudgmentSerializer.Meta):
        fields = [*JudgmentSerializer.Meta.fields, "next"]
        read_only_fields = fields

    @extend_schema_field(AssignedComparisonSerializer(allow_null=True))
    def get_next(self, judgment: Judgment) -> dict | None:
        served = self.context.get("next")
        return AssignedComparisonSerializer(served).data if served is not None else None


class JudgmentListCreateApi(generics.ListAPIView):
    """My judgments (staff: everyone's; ?mine=1 for their own). POST judges a comparison served to me."""

    serializer_class = JudgmentSerializer

    def get_queryset(self):
        judgments = judgments_visible_to(user=self.request.user)
        if self.request.query_params.get("mine"):
            judgments = judgments.filter(annotator=self.request.user)
        return judgments

    @extend_schema(request=JudgmentCreateSerializer, responses={201: JudgmentSubmittedSerializer})
    def post(self, request: Request) -> Response:
        data = JudgmentCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        given = data.validated_data
        judgment = judgment_from_screen(
            comparison_id=given["comparison"],
            annotator=request.user,
            answer=ScreenAnswer(
                verdict=given["verdict"],
                strength=given["strength"],
                ranks=given.get("ranks", ()),
                rationale=given["rationale"],
                edit=given["edit"],
                edit_of=given["edit_of"],
            ),
        )
        if not data.validated_data["next"]:
            return Response(JudgmentSerializer(judgment).data, status=201)
        served = comparison_assign_next(annotator=request.user)
        return Response(JudgmentSubmittedSerializer(judgment, context={"next": served}).data, status=201)


class PreferenceImportSerializer(serializers.Serializer):
    file = serializers.FileField(required=False, help_text="a JSONL preference file")
    pairs = serializers.ListField(
        child=serializers.JSONField(), required=False, help_text="or a list of rows"
    )
    split = serializers.ChoiceField(choices=Split.choices, required=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False)
    campaign = serializers.CharField(
        required=False, default="imported", max_length=100, help_text="created if new"
    )
    overlap = serializers.IntegerField(
        required=False, min_value=1, help_text="judgments wanted (default: the campaign's)"
    )


class PreferenceImportApi(StaffOnly, APIView):
    """Import existing preference pairs (staff), as ``import_preferences`` does: all or nothing."""

    parser_classes = [MultiPartParser, JSONParser]

    @extend_schema(request=PreferenceImportSerializer, responses={201: dict})
    def post(self, request: Request) -> Response:
        data = PreferenceImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        drafts, source = drafts_from_request(
            data.validated_data,
            list_field="pairs",
            read_file=preference_drafts_read,
            read_list=preference_drafts_from_objects,
        )
        result = preferences_import(
            drafts=drafts,
            split=data.validated_data.get("split"),
            tags=data.validated_data.get("tags", []),
            source=source,
            campaign=campaign_get_or_create(name=data.validated_data["campaign"]),
            overlap=data.validated_data.get("overlap"),
        )
        body = {
            "read": len(drafts),
            "comparisons": result.comparisons_created,
            "prompts": result.prompts_created,
            "duplicates": result.duplicates,
        }
        return Response(body, status=201)


class ExportQuerySerializer(serializers.Serializer):
    format = serializers.ChoiceField(choices=EXPORT_FORMATS, default="conversational")
    type = serializers.ChoiceField(
        choices=DATASET_TYPES,
        default="preference",
        help_text="TRL dataset type: preference, unpaired (KTO), prompt-completion (SFT)",
    )
    aggregation = serializers.ChoiceField(
        choices=AGGREGATIONS,
        default="majority",
        help_text="majority vote, or Dawid-Skene's most likely verdict",
    )
    campaign = serializers.CharField(
        required=False, allow_blank=True, help_text="only this campaign (its name; blank: every campaign)"
    )
    split = serializers.ChoiceField(choices=EXPORT_SPLITS, default="train")
    kind = serializers.MultipleChoiceField(choices=Kind.choices, required=False)
    min_agreement = serializers.FloatField(min_value=0.0, max_value=1.0, default=0.0)
    include_ties = serializers.BooleanField(default=False)
    ai_judge = serializers.ListField(
        child=serializers.CharField(),
        required=False,
        help_text="count these AI judges' verdicts on pairs too (repeat the parameter); left out unless named",
    )


def _export_query(request: Request) -> dict:
    """``dataset_rows``' keyword arguments from the validated export query."""
    query = ExportQuerySerializer(data=request.query_params)
    query.is_valid(raise_exception=True)
    params = query.validated_data
    campaign = (
        object_or_404(Campaign, error=CampaignNotFound, what="campaign", name=params["campaign"])
        if params.get("campaign")
        else None
    )
    return {
        "dataset_type": params["type"],
        "aggregation": params["aggregation"],
        "fmt": params["format"],
        "campaign": campaign,
        "split": params["split"],
        "kinds": sorted(params.get("kind") or (Kind.TRAIN, Kind.GOLD)),
        "min_agreement": params["min_agreement"],
        "include_ties": params["include_ties"],
        **({"ai_judges": judges_named(params["ai_judge"])} if params.get("ai_judge") else {}),
    }


EXPORT_FILE = "preferences.jsonl"


class ExportApi(StaffOnly, APIView):
    """The preference dataset as streamed JSONL (staff), as ``export_preferences`` writes it. Its data
    card (the dataset's README.md) is at ``/api/export/card/`` with the same query (the ``Link``
    header names it)."""

    @extend_schema(
        parameters=[ExportQuerySerializer],
        responses={(200, "application/jsonl"): OpenApiTypes.STR},
    )
    def get(self, request: Request) -> StreamingHttpResponse:
        options = _export_query(request)
        rows = dataset_rows(report=ExportReport(), **options)
        response = StreamingHttpResponse(
            (json.dumps(row, ensure_ascii=False) + "\n" for row in rows), content_type="application/jsonl"
        )
        response["Content-Disposition"] = f'attachment; filename="{EXPORT_FILE}"'
        card = reverse("api:export-card") + (
            f"?{request.META['QUERY_STRING']}" if request.META.get("QUERY_STRING") else ""
        )
        response["Link"] = f'<{card}>; rel="describedby"; type="text/markdown"'
        return response


class ExportCardApi(StaffOnly, APIView):
    """The data card of the export with the same query (staff): the README.md of a Hugging Face
    dataset folder holding ``preferences.jsonl``: who judged, how labels were aggregated, agreement,
    gold accuracy, position bias, what was left out and why, the guidelines and their hash. It reads
    the same rows the export streams (one pass, nothing kept)."""

    @extend_schema(parameters=[ExportQuerySerializer], responses={(200, "text/markdown"): OpenApiTypes.STR})
    def get(self, request: Request) -> HttpResponse:
        options = _export_query(request)
        report = ExportReport()
        for _ in dataset_rows(report=report, **options):
            pass
        card = datacard_render(
            data_file=EXPORT_FILE,
            report=report,
            stats=datacard_stats(
                comparisons=export_comparisons(
                    campaign=options["campaign"], split=options["split"], kinds=options["kinds"]
                )
            ),
            dataset_type=options["dataset_type"],
            fmt=options["fmt"],
            aggregation=options["aggregation"],
            what=f"`GET /api/export/?{request.META.get('QUERY_STRING', '')}`",
        )
        response = HttpResponse(card, content_type="text/markdown; charset=utf-8")
        response["Content-Disposition"] = 'attachment; filename="README.md"'
        return response


class CampaignSerializer(serializers.ModelSerializer):
    members = serializers.SlugRelatedField(
        many=True, slug_field="username", queryset=get_user_model().objects.all(), required=False
    )
    comparison_count = serializers.IntegerField(read_only=True, default=None)

    class Meta:
        model = Campaign
        fields = [
            "id",
            "name",
            "task",
            "status",
            "priority",
            "overlap",
            "gold_rate",
            "pair_budget",
            "open_to_all",
            "adjudicate",
            "members",
            "guidelines",
            "comparison_count",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # Uniqueness and ranges are the services' to check (one message, one error code).
        extra_kwargs = {"name": {"validators": []}, "status": {"choices": CampaignStatus.choices}}


def _campaigns() -> QuerySet[Campaign]:
    return Campaign.objects.annotate(comparison_count=Count("comparisons")).prefetch_related("members")


class AnnotatorCampaignSerializer(serializers.ModelSerializer):
    """A campaign as an annotator sees it: what to judge and how, not who else judges it nor how
    often they are tested (members and the gold rate are staff's)."""

    comparison_count = serializers.IntegerField(read_only=True, default=None)

    class Meta:
        model = Campaign
        fields = ["id", "name", "task", "status", "priority", "guidelines", "comparison_count"]


class CampaignListApi(generics.ListAPIView):
    """Campaigns: staff see all, an annotator those open to them (without members or gold rate).
    POST creates one (staff)."""

    serializer_class = CampaignSerializer

    def get_serializer_class(self):
        return CampaignSerializer if self.request.user.is_staff else AnnotatorCampaignSerializer

    def get_queryset(self):
        if self.request.user.is_staff:
            return _campaigns().order_by("-priority", "id")
        return (
            _campaigns()
            .filter(pk__in=campaigns_open_for(annotator=self.request.user))
            .order_by("-priority", "id")
        )

    @extend_schema(request=CampaignSerializer, responses={201: CampaignSerializer})
    def post(self, request: Request) -> Response:
        if not request.user.is_staff:
            raise NotAllowed("only staff create campaigns")
        data = CampaignSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        campaign = campaign_create(**values)  # with its members, in one transaction
        return Response(CampaignSerializer(_campaigns().get(pk=campaign.pk)).data, status=201)


class CampaignDetailApi(StaffOnly, APIView):
    """One campaign (staff); PATCH changes its settings, status (open/paused/closed) or members."""

    def _get(self, pk: int) -> Campaign:
        return object_or_404(_campaigns(), error=CampaignNotFound, what="campaign", pk=pk)

    @extend_schema(responses={200: CampaignSerializer})
    def get(self, request: Request, pk: int) -> Response:
        return Response(CampaignSerializer(self._get(pk)).data)

    @extend_schema(request=CampaignSerializer, responses={200: CampaignSerializer})
    def patch(self, request: Request, pk: int) -> Response:
        campaign = self._get(pk)
        data = CampaignSerializer(campaign, data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        members = values.pop("members", None)
        campaign_update(campaign=campaign, **values)
        if members is not None:
            campaign_members_set(campaign=campaign, members=members)
        return Response(CampaignSerializer(self._get(pk)).data)


class JudgeAgreementQuerySerializer(serializers.Serializer):
    campaign = serializers.CharField(help_text="the campaign's name")


class JudgeListApi(StaffOnly, APIView):
    """Every AI judge (staff), and with ``?campaign=NAME`` its agreement there with the people's
    majority: Cohen's kappa with a 95% bootstrap interval, the confusion matrix (rows: people; columns:
    the judge; labels in order), the share of verdicts the same in both orders, the calibration error
    of its probability, and how often it and the people chose the longer answer."""

    @extend_schema(parameters=[JudgeAgreementQuerySerializer], responses={200: dict})
    def get(self, request: Request) -> Response:
        campaign = None
        if name := request.query_params.get("campaign"):
            campaign = object_or_404(Campaign, error=CampaignNotFound, what="campaign", name=name)
        rows = []
        for judge in AIJudge.objects.select_related("policy").order_by("name"):
            row: dict = {
                "name": judge.name,
                "policy": judge.policy.name if judge.policy else None,
                "url": judge.url or None,
                "model": judge.model or None,
            }
            if campaign is not None:
                agreement = judge_agreement_with_people(judge=judge, campaign=campaign)
                row["campaign"] = campaign.name
                row["verdicts"] = judge.verdicts.filter(comparison__campaign=campaign).count()
                row["agreement"] = dataclasses.asdict(agreement)
            rows.append(row)
        return Response(rows)
