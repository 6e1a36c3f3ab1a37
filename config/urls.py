from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from annotate import api as annotate_api
from config import views
from config.errors import NotAllowed
from generation import api as generation_api
from training import api as training_api

_admin_login = admin.site.login


def admin_login(request: HttpRequest, extra_context: dict | None = None) -> HttpResponse:
    """The admin's login, except for a signed-in annotator: the site's 403 page saying it is for
    staff (the admin asked them to sign in again, as if their account were wrong)."""
    if request.user.is_authenticated and not request.user.is_staff:
        raise NotAllowed(f"the admin is for staff; you are signed in as {request.user.get_username()}")
    return _admin_login(request, extra_context)


admin.site.login = admin_login  # type: ignore[method-assign]

_api_docs = SpectacularSwaggerSplitView.as_view(url_name="api:schema")
_api_schema = SpectacularAPIView.as_view()


def api_schema(request: HttpRequest) -> HttpResponse:
    """The OpenAPI schema; a signed-in annotator gets the API's JSON 403 (the schema view answered in
    its own YAML, which a browser downloads as a file)."""
    if request.user.is_authenticated and not request.user.is_staff:
        error = NotAllowed(f"the API schema is for staff; you are signed in as {request.user.get_username()}")
        return JsonResponse(error.as_dict(), status=error.status)
    return _api_schema(request)


def api_docs(request: HttpRequest) -> HttpResponse:
    """The API's docs page; a signed-in annotator gets the site's 403 page saying it is for staff
    (the docs view itself answered a bare "403 Forbidden")."""
    if request.user.is_authenticated and not request.user.is_staff:
        raise NotAllowed(
            f"the API docs are for staff; you are signed in as {request.user.get_username()}. "
            "Annotators use the API with their token: POST /api/auth/token/, then /api/comparisons/next/ "
            "and /api/judgments/ (see the README)"
        )
    return _api_docs(request)


api = [
    path("prompts/", generation_api.PromptListCreateApi.as_view(), name="prompts"),
    path("prompts/import/", generation_api.PromptImportApi.as_view(), name="prompts-import"),
    path("policies/", generation_api.PolicyListApi.as_view(), name="policies"),
    path("policies/<int:pk>/", generation_api.PolicyDetailApi.as_view(), name="policy"),
    path("policies/<int:pk>/promote/", generation_api.PolicyPromoteApi.as_view(), name="policy-promote"),
    path("campaigns/", annotate_api.CampaignListApi.as_view(), name="campaigns"),
    path("campaigns/<int:pk>/", annotate_api.CampaignDetailApi.as_view(), name="campaign"),
    path("comparisons/", annotate_api.ComparisonListApi.as_view(), name="comparisons"),
    path("comparisons/next/", annotate_api.ComparisonNextApi.as_view(), name="comparisons-next"),
    path("judgments/", annotate_api.JudgmentListCreateApi.as_view(), name="judgments"),
    path("preferences/import/", annotate_api.PreferenceImportApi.as_view(), name="preferences-import"),
    path("export/", annotate_api.ExportApi.as_view(), name="export"),
    path("export/card/", annotate_api.ExportCardApi.as_view(), name="export-card"),
    path("judges/", annotate_api.JudgeListApi.as_view(), name="judges"),
    path("rounds/", training_api.RoundListApi.as_view(), name="rounds"),
    path("rounds/<int:pk>/", training_api.RoundDetailApi.as_view(), name="round"),
    path("rounds/<int:pk>/cancel/", training_api.RoundCancelApi.as_view(), name="round-cancel"),
    path("rounds/<int:pk>/retry/", training_api.RoundRetryApi.as_view(), name="round-retry"),
    path("auth/token/", views.TokenApi.as_view(), name="token"),
    path("schema/", api_schema, name="schema"),
    path("docs/", api_docs, name="docs"),
]

urlpatterns = [
    path("", views.home, name="home"),
    path("welcome/", views.landing, name="landing"),
    path("favicon.ico", views.favicon, name="favicon"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("annotate/", include("annotate.urls")),
    path("training/", include("training.urls")),
    path("admin/", admin.site.urls),
    path("api/", include((api, "api"))),
]

handler404 = "config.http_errors.not_found"
