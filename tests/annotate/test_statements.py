"""How many SQL statements a judgment and the next comparison cost: the load benchmark's unit of work
(``benchmarks/load.py``). A count, not a timing: a change that adds a query per judgment shows here."""

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
