"""Whom to trust, in a real browser: from the dashboard's link, people and an AI judge side by side,
the suspicious flagged where they are read."""

import pytest

from tests.factories import JudgmentFactory, UserFactory
from tests.training.test_trust import long_pair


@pytest.mark.django_db(transaction=True)
def test_staff_find_the_suspicious_annotator_flagged_beside_the_others(live_server, browser_page):
    from annotate.models import AIVerdict, Side
    from annotate.services.ai_judges import judge_register

    UserFactory(username="boss", password="boss-password-123", is_staff=True)
    careful, hasty = UserFactory(username="careful"), UserFactory(username="hasty")
    for i in range(12):
        comparison = long_pair()
        shown = Side.FIRST if i % 2 else Side.SECOND
        JudgmentFactory(
            comparison=comparison, annotator=careful, choice="first", left=shown, time_on_task_ms=60_000
        )
        JudgmentFactory(
            comparison=comparison, annotator=hasty, choice="first", left=shown, time_on_task_ms=1_500
        )
    judge = judge_register(name="stronger model", url="http://127.0.0.1:9", model="m")
    AIVerdict.objects.create(
        judge=judge,
        comparison=comparison,
        choice="first",
        probability_first=0.9,
        consistent=True,
        readings=[{"probability_shown_first": 0.9}, {"probability_shown_first": 0.1}],
    )
    page = browser_page
    page.set_viewport_size({"width": 1366, "height": 800})
    page.goto(f"{live_server.url}/login/?next=/training/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "boss-password-123")
    page.click("button[type=submit]")
    page.click("text=Whom to trust")
    page.wait_for_selector("table.trust")

    rows = {r.locator("td").first.inner_text().strip(): r for r in page.locator("table.trust tbody tr").all()}
    assert set(rows) == {"careful", "hasty", "stronger model (AI judge)"}
    assert "too fast" in rows["hasty"].inner_text() and rows["hasty"].get_attribute("class") == "flagged"
    assert "⚑" not in rows["careful"].inner_text()
    assert rows["hasty"].locator(".flag").is_visible()
    assert page.evaluate("document.documentElement.scrollWidth") <= 1366  # nothing runs off the side
