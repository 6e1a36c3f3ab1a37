import time
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.authtoken.models import Token
from tests.factories import ComparisonFactory, UserFactory, CampaignFactory

@pytest.mark.django_db(transaction=True)
def test_q(client):
    camp = CampaignFactory(gold_rate=0)
    for _ in range(100): ComparisonFactory(campaign=camp)
    u = UserFactory(); t = Token.objects.create(user=u)
    h = {"HTTP_AUTHORIZATION": f"Token {t.key}"}
    c = client.post("/api/comparisons/next/", **h).json()["comparison"]
    for _ in range(20):
        c = client.post("/api/judgments/", {"comparison": c, "verdict": "left", "next": True}, content_type="application/json", **h).json()["next"]["comparison"]
    with CaptureQueriesContext(connection) as q2:
        t0 = time.perf_counter(); client.post("/api/judgments/", {"comparison": c, "verdict": "left", "next": True}, content_type="application/json", **h); print("TOTAL", (time.perf_counter()-t0)*1000)
    for q in q2.captured_queries: print("Q", q["time"], q["sql"][:120])
