"""How many SQL statements a judgment and the next comparison cost: the load benchmark's unit of work
(``benchmarks/load.py``). A count, not a timing: a change that adds a query per judgment shows here."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.factories import CampaignFactory, ComparisonFactory, UserFactory

# Savepoints apart: the comparison, the assignment, the comparison locked, the judgment, the lease
# ended, the comparison's counts; then the next: the lease, the open campaigns, the candidate, its
# assignment. PostgreSQL looks once more at the locked candidate with a fresh query (SKIP LOCKED: a
# lease committed after the first query's snapshot). (Two fewer than before: both answers'
# texts were read on every judgment, where only an edit needs them.)
MOST = {"sqlite": 10, "postgresql": 11}


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
    statements = [q["sql"] for q in captured.captured_queries if "SAVEPOINT" not in q["sql"]]
    assert len(statements) <= MOST[connection.vendor], "\n".join(s[:120] for s in statements)
