"""Who may do what, for every route of the URL conf: one table, one row per route (docs/security.md
holds the same table). A route without a row fails the suite, so a new page or endpoint is decided
before it ships.

Roles: anonymous; ``annotator`` (owns the judgment and is a member of the members-only campaign the
URLs name); ``another`` annotator (also a member, owns nothing); ``non-member`` (an annotator outside
that campaign); ``staff``. Outcomes: ``ok`` (served or acted on; a 400 for an empty body counts:
the request got past the permission check), ``login`` (sent to log in: 302 to the login page, or 401/403
from the API), ``denied`` (403, a 404 for what they may not see, or the admin site's redirect to
its own login). No request may get a 5xx.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from annotate.models import AIJudge, ArenaConversation, ArenaTurn, Assignment, Judgment
from tests.factories import CampaignFactory, ComparisonFactory, PolicyFactory, UserFactory
from training.models import RoundStatus, TrainingRound

ROLES = ("anonymous", "annotator", "another", "non-member", "staff")
ALL = ("ok",) * 5
SIGNED_IN = ("login", "ok", "ok", "ok", "ok")
STAFF = ("login", "denied", "denied", "denied", "ok")
# An object of the annotator's (their judgment), or of the members-only campaign.
OWNER = ("login", "ok", "denied", "denied", "denied")
MEMBERS = ("login", "ok", "ok", "denied", "denied")

# route name → {method: outcomes per role}; the URL of each route is filled in by ``url_for``.
TABLE: dict[str, dict[str, tuple[str, ...]]] = {
    "home": {"get": SIGNED_IN},
    "landing": {"get": SIGNED_IN},
    "favicon": {"get": ALL},
    "login": {"get": ALL, "post": ALL},
    "logout": {"post": ("login",) * 5},  # logging out leads to the login page
    "annotate:queue": {"get": MEMBERS},
    "annotate:judge": {"post": MEMBERS},
    "annotate:mine": {"get": SIGNED_IN},
    "annotate:change": {"get": OWNER, "post": OWNER},
    "annotate:campaigns": {"get": STAFF, "post": STAFF},
    "annotate:campaign": {"get": STAFF, "post": STAFF},
    "annotate:campaign-judges": {"get": STAFF},
    "annotate:campaign-judge": {"post": STAFF},
    "annotate:campaign-route": {"post": STAFF},
    "annotate:judge-new": {"post": STAFF},
    "annotate:arena": {"get": MEMBERS, "post": MEMBERS},
    "annotate:arena-continue": {"post": OWNER},
    "annotate:arena-turn": {"get": OWNER},
    "annotate:arena-stream": {"get": OWNER},
    "annotate:arena-vote": {"post": OWNER},
    "annotate:arena-stop": {"post": OWNER},
    "annotate:arena-regenerate": {"post": OWNER},
    "training:dashboard": {"get": STAFF},
    "training:trust": {"get": STAFF},
    "training:start": {"post": STAFF},
    "training:round": {"get": STAFF},
    "training:round-live": {"get": STAFF},
    "training:cancel": {"post": STAFF},
    "training:retry": {"post": STAFF},
    "training:promote": {"post": STAFF},
    "admin": {"get": STAFF},
    "api:prompts": {"get": STAFF, "post": STAFF},
    "api:prompts-import": {"post": STAFF},
    "api:policies": {"get": STAFF},
    "api:policy": {"get": STAFF},
    "api:policy-promote": {"post": STAFF},
    "api:campaigns": {"get": SIGNED_IN, "post": STAFF},
    "api:campaign": {"get": STAFF, "patch": STAFF},
    "api:comparisons": {"get": STAFF},
    "api:comparisons-next": {"post": MEMBERS},
    "api:judgments": {"get": SIGNED_IN, "post": MEMBERS},
    "api:preferences-import": {"post": STAFF},
    "api:export": {"get": STAFF},
    "api:export-card": {"get": STAFF},
    "api:judges": {"get": STAFF},
    "api:rounds": {"get": STAFF, "post": STAFF},
    "api:round": {"get": STAFF},
    "api:round-cancel": {"post": STAFF},
    "api:round-retry": {"post": STAFF},
    "api:token": {"post": ALL},
    "api:schema": {"get": STAFF},
    "api:docs": {"get": STAFF},
}


def routes() -> list[str]:
    """Every route name in the URL conf (the admin site counts as one: Django's own, staff only)."""
    names: list[str] = []

    def walk(patterns, namespace):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    names.append("admin")
                    continue
                inner = ":".join(n for n in (namespace, pattern.namespace) if n)
                walk(pattern.url_patterns, inner)
            elif isinstance(pattern, URLPattern):
                names.append(f"{namespace}:{pattern.name}" if namespace else str(pattern.name))

    walk(get_resolver().url_patterns, "")
    return names


def test_every_route_has_a_row_and_every_row_a_route():
    assert sorted(set(routes()) - set(TABLE)) == [], "routes without a row in the permission table"
    assert sorted(set(TABLE) - set(routes())) == [], "rows for routes that no longer exist"


@pytest.fixture
def world(db):
    """The objects the URLs name, and a user per role."""
    people = {
        "annotator": UserFactory(username="ann"),
        "another": UserFactory(username="bob"),
        "non-member": UserFactory(username="carl"),
        "staff": UserFactory(username="boss", is_staff=True, is_superuser=True),
    }
    campaign = CampaignFactory(name="members-only", open_to_all=False)
    campaign.members.add(people["annotator"], people["another"])
    comparison = ComparisonFactory(campaign=campaign, overlap=3)
    judged = ComparisonFactory(campaign=campaign, overlap=3)
    now = timezone.now()
    for user in (people["annotator"], people["another"], people["non-member"], people["staff"]):
        Assignment.objects.create(
            comparison=comparison,
            annotator=user,
            left="first",
            served_at=now,
            expires_at=now + timedelta(hours=1),
        )
    judgment = Judgment.objects.create(
        comparison=judged, annotator=people["annotator"], choice="first", left="first"
    )
    policy = PolicyFactory()
    held = PolicyFactory(parent=policy, held_back=True, held_back_reason="fluency")
    training_round = TrainingRound.objects.create(
        policy=policy,
        reference=policy,
        status=RoundStatus.FAILED,
        error="out of memory",
        finished_at=timezone.now(),
    )
    arena = CampaignFactory(name="members-only arena", open_to_all=False, task="arena")
    arena.members.add(people["annotator"], people["another"])
    conversation = ArenaConversation.objects.create(
        campaign=arena, annotator=people["annotator"], policy_a=policy, policy_b=held, left="first"
    )
    turn = ArenaTurn.objects.create(
        conversation=conversation,
        number=1,
        messages=[{"role": "user", "content": "hi"}],
        status="voted",
        comparison=ComparisonFactory(campaign=arena),
    )
    return {
        "people": people,
        "campaign": campaign,
        "arena": arena,
        "conversation": conversation,
        "turn": turn,
        "comparison": comparison,
        "judgment": judgment,
        "policy": held,
        "round": training_round,
        "judge": AIJudge.objects.create(name="a judge", url="http://127.0.0.1:9", model="m"),
    }


def url_for(name: str, w: dict) -> tuple[str, dict]:
    """(URL, body) that exercises ``name`` on the world's objects."""
    pk = {
        "annotate:change": w["judgment"].pk,
        "annotate:campaign": w["campaign"].pk,
        "annotate:campaign-judges": w["campaign"].pk,
        "annotate:campaign-judge": w["campaign"].pk,
        "annotate:campaign-route": w["campaign"].pk,
        "annotate:judge-new": w["campaign"].pk,
        "api:campaign": w["campaign"].pk,
        "api:policy": w["policy"].pk,
        "api:policy-promote": w["policy"].pk,
        "training:promote": w["policy"].pk,
        "annotate:arena": w["arena"].pk,
        "annotate:arena-continue": w["conversation"].pk,
    }.get(name, w["turn"].pk if name.startswith("annotate:arena-") else w["round"].pk)
    urls = {
        "home": "/",
        "landing": "/welcome/",
        "favicon": "/favicon.ico",
        "login": "/login/",
        "logout": "/logout/",
        "admin": "/admin/",
        "annotate:queue": f"/annotate/?campaign={w['campaign'].pk}",
        "annotate:judge": "/annotate/judge/",
        "annotate:mine": "/annotate/mine/",
        "annotate:change": f"/annotate/mine/{pk}/",
        "annotate:campaigns": "/annotate/campaigns/",
        "annotate:campaign": f"/annotate/campaigns/{pk}/",
        "annotate:campaign-judges": f"/annotate/campaigns/{pk}/judges/",
        "annotate:campaign-judge": f"/annotate/campaigns/{pk}/judge/",
        "annotate:campaign-route": f"/annotate/campaigns/{pk}/route/",
        "annotate:judge-new": f"/annotate/campaigns/{pk}/judges/new/",
        "training:dashboard": "/training/",
        "training:trust": "/training/trust/",
        "training:start": "/training/rounds/start/",
        "training:round": f"/training/rounds/{pk}/",
        "training:round-live": f"/training/rounds/{pk}/live/",
        "training:cancel": f"/training/rounds/{pk}/cancel/",
        "training:retry": f"/training/rounds/{pk}/retry/",
        "training:promote": f"/training/policies/{pk}/promote/",
        "annotate:arena": f"/annotate/arena/{pk}/",
        "annotate:arena-continue": f"/annotate/arena/conversations/{pk}/continue/",
        "annotate:arena-turn": f"/annotate/arena/turns/{pk}/",
        "annotate:arena-stream": f"/annotate/arena/turns/{pk}/stream/",
        "annotate:arena-vote": f"/annotate/arena/turns/{pk}/vote/",
        "annotate:arena-stop": f"/annotate/arena/turns/{pk}/stop/",
        "annotate:arena-regenerate": f"/annotate/arena/turns/{pk}/regenerate/",
    }
    if name in urls:
        url = urls[name]
    else:
        path = {
            "api:prompts": "prompts/",
            "api:prompts-import": "prompts/import/",
            "api:policies": "policies/",
            "api:policy": f"policies/{pk}/",
            "api:policy-promote": f"policies/{pk}/promote/",
            "api:campaigns": "campaigns/",
            "api:campaign": f"campaigns/{pk}/",
            "api:comparisons": "comparisons/",
            "api:comparisons-next": "comparisons/next/",
            "api:judgments": "judgments/",
            "api:preferences-import": "preferences/import/",
            "api:export": "export/",
            "api:export-card": "export/card/",
            "api:judges": f"judges/?campaign={w['campaign'].name}",
            "api:rounds": "rounds/",
            "api:round": f"rounds/{pk}/",
            "api:round-cancel": f"rounds/{pk}/cancel/",
            "api:round-retry": f"rounds/{pk}/retry/",
            "api:token": "auth/token/",
            "api:schema": "schema/",
            "api:docs": "docs/",
        }[name]
        url = f"/api/{path}"
    body = {
        "annotate:judge": {"comparison": w["comparison"].pk, "answer": "left"},
        "annotate:change": {"answer": "right"},
        "annotate:campaign-judge": {"judge": w["judge"].pk},
        "annotate:campaign-route": {"judge": w["judge"].pk},
        "annotate:judge-new": {"name": "another judge", "url": "http://127.0.0.1:9", "model": "m"},
        "api:judgments": {"comparison": w["comparison"].pk, "verdict": "left"},
        "api:comparisons-next": {"campaign": w["campaign"].name},
    }.get(name, {})
    return url, body


def outcome(response, *, anonymous: bool) -> str:
    status = response.status_code
    assert status < 500, f"server error {status}"
    location = response.get("Location", "")
    if status == 401 or (status == 302 and location.startswith("/login/")):
        return "login"
    if status == 302 and location.startswith("/admin/login/"):  # the admin site: log in as staff
        return "login" if anonymous else "denied"
    if status in (403, 404):
        return "denied"
    return "ok"


CASES = [
    (name, method, i) for name, methods in TABLE.items() for method in methods for i in range(len(ROLES))
]


@pytest.mark.parametrize(("name", "method", "role"), CASES, ids=[f"{n}-{m}-{ROLES[i]}" for n, m, i in CASES])
def test_permission_table(client, world, name, method, role):
    who = ROLES[role]
    expected = TABLE[name][method][role]
    if who != "anonymous":
        client.force_login(world["people"][who])
    url, body = url_for(name, world)
    if method == "get":
        response = client.get(url)
    else:
        response = (
            getattr(client, method)(url, body, content_type="application/json")
            if url.startswith("/api/")
            else getattr(client, method)(url, body)
        )
    got = outcome(response, anonymous=who == "anonymous")
    if who == "anonymous" and expected == "login" and url.startswith("/api/"):
        # a client without a session or token is told to authenticate (401).
        assert response.status_code == 401, response.status_code
        if response["Content-Type"].startswith("application/json"):  # the schema and docs render otherwise
            assert response.json()["error"] == "not_authenticated", response.json()
        return
    assert got == expected, (
        f"{method.upper()} {url} as {who}: {response.status_code} {response.get('Location', '')}"
    )


def table_markdown() -> str:
    """The table as docs/security.md shows it. Regenerate: DEBUG=1 DJANGO_SETTINGS_MODULE=tests.settings
    python -c "import django; django.setup(); from tests.test_permissions import table_markdown as t; print(t(), end='')"."""
    lines = [
        "| route | method | anonymous | annotator | another annotator | campaign non-member | staff |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, methods in TABLE.items():
        for method, outcomes in methods.items():
            lines.append(f"| `{name}` | {method.upper()} | " + " | ".join(outcomes) + " |")
    return "\n".join(lines) + "\n"


def test_docs_security_shows_this_table():
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[1] / "docs" / "security.md").read_text(encoding="utf-8")
    assert table_markdown() in doc, "docs/security.md's permission table differs: see table_markdown()"


@pytest.mark.django_db
@pytest.mark.parametrize("route", ["prompts-import", "preferences-import"])
def test_an_annotator_is_refused_a_staff_import_before_its_body_is_read(annotator, monkeypatch, route):
    from django.test import Client

    from config.parsers import JSONParser

    client = Client(enforce_csrf_checks=True)  # as a browser's session: the CSRF check reads the body
    client.cookies["csrftoken"] = "a" * 32
    parsed = []
    monkeypatch.setattr(JSONParser, "parse", lambda self, *a, **k: parsed.append(1) or {})
    client.force_login(annotator)
    body = json.dumps({"prompts": [{"prompt": "x" * 100}] * 10_000})

    answer = client.post(reverse(f"api:{route}"), body, content_type="application/json")

    assert answer.status_code == 403 and parsed == []


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/admin/"])
def test_an_annotator_opening_a_staff_page_is_told_it_is_for_staff_not_asked_to_log_in(
    client, annotator, path
):
    client.force_login(annotator)

    page = client.get(path, follow=True)

    assert page.status_code == 403 and "is for staff; you are signed in as" in page.content.decode()
    assert '<header class="top">' in page.content.decode()  # the site's page, with its links
