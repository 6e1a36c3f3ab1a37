from __future__ import annotations

from collections.abc import Callable

from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.errors import Invalid, object_or_404
from config.parsers import JSONParser
from config.permissions import StaffOnly
from generation.errors import LineProblem, PolicyNotFound
from generation.models import Policy, Prompt, Split
from generation.prompt_files import prompt_draft_from_record, prompt_drafts_from_objects, prompt_drafts_read
from generation.services import policy_promote, prompts_import


class PromptSerializer(serializers.ModelSerializer):
    tags = serializers.SlugRelatedField(many=True, read_only=True, slug_field="name")

    class Meta:
        model = Prompt
        fields = ["id", "text", "messages", "split", "tags", "source", "content_hash", "created_at"]
        read_only_fields = ["content_hash", "created_at"]


class PromptCreateSerializer(serializers.Serializer):
    prompt = serializers.CharField(required=False, trim_whitespace=False)
    messages = serializers.JSONField(required=False)
    split = serializers.ChoiceField(choices=Split.choices, required=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False)


class PromptListCreateApi(StaffOnly, generics.ListAPIView):
    """Prompts (staff). POST one prompt as ``{"prompt": ...}`` or ``{"messages": [...]}``."""

    serializer_class = PromptSerializer

    def get_queryset(self):
        prompts = Prompt.objects.prefetch_related("tags").order_by("id")
        split = self.request.query_params.get("split")
        return prompts.filter(split=split) if split else prompts

    @extend_schema(request=PromptCreateSerializer, responses={201: PromptSerializer})
    def post(self, request: Request) -> Response:
        data = PromptCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        draft = prompt_draft_from_record(1, dict(data.validated_data))
        if isinstance(draft, LineProblem):
            raise Invalid(draft.problem)
        result = prompts_import(drafts=[draft], source="api")
        prompt = Prompt.objects.get(content_hash=draft.content_hash)
        return Response(PromptSerializer(prompt).data, status=201 if result.created else 200)


def drafts_from_request(
    data: dict, *, list_field: str, read_file: Callable, read_list: Callable
) -> tuple[list, str]:
    """(drafts, source) from a bulk-import body holding either an uploaded ``file`` or a JSON list."""
    upload, objects = data.get("file"), data.get(list_field)
    if (upload is None) == (objects is None):
        raise Invalid(f"send either a 'file' or a '{list_field}' list")
    if upload is not None:
        return read_file(upload, name=upload.name), upload.name
    return read_list(objects), "api"


class PromptImportSerializer(serializers.Serializer):
    file = serializers.FileField(required=False, help_text="a JSONL or CSV prompt file")
    prompts = serializers.ListField(child=serializers.JSONField(), required=False, help_text="or a list")
    split = serializers.ChoiceField(choices=Split.choices, required=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=100), required=False)


class PromptImportApi(StaffOnly, APIView):
    """Bulk import (staff): a file upload or a JSON list, all or nothing, bad lines listed."""

    parser_classes = [MultiPartParser, JSONParser]

    @extend_schema(request=PromptImportSerializer, responses={201: dict})
    def post(self, request: Request) -> Response:
        data = PromptImportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        drafts, source = drafts_from_request(
            data.validated_data,
            list_field="prompts",
            read_file=prompt_drafts_read,
            read_list=prompt_drafts_from_objects,
        )
        result = prompts_import(
            drafts=drafts,
            split=data.validated_data.get("split"),
            tags=data.validated_data.get("tags", []),
            source=source,
        )
        body = {"read": len(drafts), "created": result.created, "duplicates": result.duplicates}
        return Response(body, status=201)


class PolicySerializer(serializers.ModelSerializer):
    parent = serializers.SlugRelatedField(read_only=True, slug_field="name")

    class Meta:
        model = Policy
        fields = [
            "id",
            "name",
            "location",
            "location_kind",
            "adapter",
            "parent",
            "held_back",
            "held_back_reason",
            "notes",
            "created_at",
        ]


class PolicyListApi(StaffOnly, generics.ListAPIView):
    """Policies (staff): annotators judge blind, so they never see which policy wrote what."""

    serializer_class = PolicySerializer
    queryset = Policy.objects.select_related("parent").order_by("id")


class PolicyDetailApi(StaffOnly, generics.RetrieveAPIView):
    serializer_class = PolicySerializer
    queryset = Policy.objects.select_related("parent")

    def get_object(self) -> Policy:
        return object_or_404(self.get_queryset(), error=PolicyNotFound, what="policy", pk=self.kwargs["pk"])


class PolicyPromoteApi(StaffOnly, APIView):
    """Staff vouch for a held-back policy: it may start rounds and generate again (409 if not held back)."""

    @extend_schema(request=None, responses={200: PolicySerializer})
    def post(self, request: Request, pk: int) -> Response:
        policy = object_or_404(Policy, error=PolicyNotFound, what="policy", pk=pk)
        return Response(PolicySerializer(policy_promote(policy=policy, by=request.user.get_username())).data)
