"""How many SQL statements a judgment and the next comparison cost: the load benchmark's unit of work
(``benchmarks/load.py``). A count, not a timing: a change that adds a query per judgment shows here."""

import re

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import CampaignFactory, ComparisonFactory

# Every round trip, transaction bounds included (each service's transaction shows here as a savepoint
# and its release, as BEGIN and COMMIT in production): in one transaction the assignment with its
# comparison (not read before), the comparison locked (with whether this annotator judged it: the
# judgment's insert needs no savepoint of its own), the judgment, the lease ended, the comparison's
# counts; then in a second whether a live lease is held, the open campaigns, the candidate, what it
# shows, its lease. The statements on every judgment are SQL written out (``annotate/sql.py``: the
# ORM took longer to compile them than the database to run them). PostgreSQL counts the locked
# candidate's leases once more (SKIP LOCKED: a lease committed after the first query's snapshot).
MOST = {"sqlite": 14, "postgresql": 15}


@pytest.fixture
def judging(annotator):
    """An annotator with a campaign of three comparisons to judge, as load.py's (no gold)."""
    campaign = CampaignFactory(name="load", gold_rate=0)
    for _ in range(3):
        ComparisonFactory(campaign=campaign)
    return annotator


@pytest.mark.django_db
def test_a_judgment_and_the_next_comparison_take_a_bounded_number_of_statements(api, judging):
    api.force_authenticate(judging)
    served = api.post("/api/comparisons/next/", {}, format="json").json()

    with CaptureQueriesContext(connection) as captured:
        answer = api.post(
            "/api/judgments/",
            {"comparison": served["comparison"], "verdict": "left", "next": True},
            format="json",
        )

    assert answer.status_code == 201 and answer.json()["next"]["comparison"] != served["comparison"]
    statements = [q["sql"] for q in captured.captured_queries]
    assert len(statements) <= MOST[connection.vendor], "\n".join(s[:120] for s in statements)


@pytest.mark.django_db
def test_a_judgment_on_the_judging_page_reads_the_session_and_never_writes_it(client, judging):
    client.force_login(judging)
    page = client.get("/annotate/").content.decode()
    served = int(page.split('name="comparison" value="')[1].split('"')[0])

    with CaptureQueriesContext(connection) as captured:
        answer = client.post(
            "/annotate/judge/", {"comparison": served, "answer": "left"}, HTTP_HX_REQUEST="true"
        )

    assert answer.status_code == 200 and b"Recorded on the previous comparison" in answer.content
    assert f'name="comparison" value="{served}"'.encode() not in answer.content  # the next one
    session = [q["sql"] for q in captured.captured_queries if "django_session" in q["sql"]]
    assert len(session) == 1 and session[0].lstrip().upper().startswith("SELECT"), session


def _joined_reads(plan: dict, joined: bool = False) -> list[str]:
    """The aliases ``j`` (judgments) and ``s`` (leases) that ``plan`` reads through a join rather than
    per candidate: a join node puts what is beneath it in a join, a subplan starts afresh."""
    if plan.get("Parent Relationship") == "SubPlan":
        joined = False
    joined = joined or "Join Type" in plan
    found = [plan["Alias"]] if joined and plan.get("Alias") in ("j", "s") else []
    for child in plan.get("Plans", []):
        found += _joined_reads(child, joined)
    return found


@pytest.mark.django_db
@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL's plans")
def test_the_queue_reads_an_annotators_judgments_and_skips_per_candidate_whatever_the_statistics(
    api, judging
):
    """With most of a campaign's judgments the importer's (as ``import_preferences`` leaves it),
    PostgreSQL planned ``NOT EXISTS`` as a merge anti-join that read every judgment in comparison
    order to find one open comparison, and a subquery ``IS NULL`` as a sort of every open comparison
    (docs/benchmarks.md, 2026-12-07). The candidate query walks the open comparisons in order and
    reads an annotator's judgments and skips per candidate; the progress count reads them per
    candidate too."""
    from annotate.selectors import annotator_progress
    from annotate.services.judgments import import_user
    from tests.factories import JudgmentFactory

    campaign = CampaignFactory(name="load")
    importer = import_user()
    for _ in range(200):  # each holding an imported judgment, and wanting one more
        JudgmentFactory(comparison=ComparisonFactory(campaign=campaign, overlap=2), annotator=importer)
    plans: dict[str, list] = {"candidate": [], "progress": []}

    def explain(execute, sql, params, many, context):
        kind = "candidate" if "ORDER BY c.id LIMIT 1" in sql else "progress" if "AS counted" in sql else None
        if kind and not sql.startswith(("EXPLAIN", "PREPARE")):
            plans[kind] += _plans(sql, params)
        return execute(sql, params, many, context)

    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")
    api.force_authenticate(judging)
    with connection.execute_wrapper(explain):
        served = api.post("/api/comparisons/next/", {}, format="json")
        annotator_progress(annotator=judging)

    assert served.status_code == 200
    assert plans["candidate"] and plans["progress"]
    for kind, found in plans.items():
        for plan in found:
            assert _joined_reads(plan) == [], (kind, plan)
    for plan in plans["candidate"]:
        # in id order down the partial index, expecting to stop at one of the first: had the planner
        # expected few candidates to qualify, it would have reckoned with testing them all
        assert "Sort" not in _node_types(plan), plan
        assert plan["Total Cost"] < plan["Plans"][0]["Total Cost"] / 10, plan


def _plans(sql: str, params) -> list[dict]:
    """The plan PostgreSQL makes for ``sql`` with these values, and the generic plan a prepared
    statement settles on after its first runs (the one the web process runs, ``config/settings.py``)."""
    types = ["::text" if isinstance(value, str) else "" for value in params]  # a text is untyped
    numbered = iter(range(len(params)))
    with connection.cursor() as cursor:
        cursor.execute("EXPLAIN (FORMAT JSON) " + sql, params)
        custom = cursor.fetchone()[0][0]["Plan"]
        cursor.execute(
            "PREPARE planned AS " + re.sub("%s", lambda _: f"${(n := next(numbered)) + 1}{types[n]}", sql)
        )
        cursor.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        # EXECUTE takes no protocol parameters (a utility statement): its values go in as literals
        values = ", ".join(f"'{v.isoformat()}'" if hasattr(v, "isoformat") else f"'{v}'" for v in params)
        cursor.execute(f"EXPLAIN (FORMAT JSON) EXECUTE planned({values})")
        generic = cursor.fetchone()[0][0]["Plan"]
        cursor.execute("RESET plan_cache_mode")
        cursor.execute("DEALLOCATE planned")
    return [custom, generic]


def _node_types(plan: dict) -> list[str]:
    return [plan["Node Type"]] + [t for child in plan.get("Plans", []) for t in _node_types(child)]
