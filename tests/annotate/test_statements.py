"""How many SQL statements a judgment and the next comparison cost: the load benchmark's unit of work
(``benchmarks/load.py``). A count, not a timing: a change that adds a query per judgment shows here."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import CampaignFactory, ComparisonFactory, UserFactory

# Every round trip, transaction bounds included (each service's transaction shows here as a savepoint
# and its release, as BEGIN and COMMIT in production): the comparison; in one transaction the
# assignment, the comparison locked (with whether this annotator judged it: the judgment's insert
# needs no savepoint of its own), the judgment, the lease ended, the comparison's counts; then in a
# second whether a live lease is held, the open campaigns, the candidate (SQL written out: the ORM
# took longer to compile it than the database to run it), what it shows, its lease. PostgreSQL
# counts the locked candidate's leases once more (SKIP LOCKED: a lease committed after the first
# query's snapshot).
MOST = {"sqlite": 15, "postgresql": 16}


@pytest.mark.django_db
def test_a_judgment_and_the_next_comparison_take_a_bounded_number_of_statements(api):
    annotator = UserFactory()
    campaign = CampaignFactory(name="load", gold_rate=0)
    for _ in range(3):
        ComparisonFactory(campaign=campaign)
    api.force_authenticate(annotator)
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
