import cProfile, pstats, time
import pytest
from rest_framework.authtoken.models import Token
from tests.factories import ComparisonFactory, UserFactory, CampaignFactory

@pytest.mark.django_db
def test_prof(client):
    camp = CampaignFactory(gold_rate=0)
    for _ in range(600): ComparisonFactory(campaign=camp)
    u = UserFactory(); t = Token.objects.create(user=u)
    h = {"HTTP_AUTHORIZATION": f"Token {t.key}"}
    c = client.post("/api/comparisons/next/", **h).json()["comparison"]
    for _ in range(50):
        c = client.post("/api/judgments/", {"comparison": c, "verdict": "left", "next": True}, content_type="application/json", **h).json()["next"]["comparison"]
    t0 = time.perf_counter()
    for _ in range(200):
        client.get("/api/judgments/?page_size=1", **h)
    floor = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(200):
        c = client.post("/api/judgments/", {"comparison": c, "verdict": "left", "next": True}, content_type="application/json", **h).json()["next"]["comparison"]
    one = time.perf_counter() - t0
    print("FLOOR per request", floor/200*1000, "ms; one call", one/200*1000, "ms")
    pr = cProfile.Profile(); pr.enable()
    for _ in range(200):
        c = client.post("/api/judgments/", {"comparison": c, "verdict": "left", "next": True}, content_type="application/json", **h).json()["next"]["comparison"]
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(25)
