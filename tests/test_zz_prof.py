import time
import pytest
from rest_framework.authtoken.models import Token
from tests.factories import ComparisonFactory, UserFactory

@pytest.mark.django_db
def test_prof(client):
    from tests.factories import CampaignFactory
    camp = CampaignFactory(gold_rate=0)
    for _ in range(400): ComparisonFactory(campaign=camp)
    u = UserFactory(); t = Token.objects.create(user=u)
    h = {"HTTP_AUTHORIZATION": f"Token {t.key}"}
    c = client.post("/api/comparisons/next/", **h).json()["comparison"]
    t0 = time.perf_counter()
    for _ in range(200):
        client.get("/api/judgments/", **h); client.get("/api/judgments/", **h)
    floor = time.perf_counter() - t0
    sub = nxt = 0
    for _ in range(200):
        t0 = time.perf_counter()
        client.post("/api/judgments/", {"comparison": c, "verdict": "left"}, content_type="application/json", **h)
        t1 = time.perf_counter()
        c = client.post("/api/comparisons/next/", **h).json()["comparison"]
        sub += t1 - t0; nxt += time.perf_counter() - t1
    print("FLOOR", floor/200*1000, "ms/iter  SUBMIT", sub/200*1000, "NEXT", nxt/200*1000)
