"""Staff start a round in a real browser, a real worker process trains it, the page draws it live."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from annotate.models import Judgment
from tests.e2e.test_annotate_browser import press_and_wait
from tests.factories import PromptFactory, UserFactory
from tests.training.test_rounds import judged_policy
from training.models import RoundStatus, TrainingRound

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def worker(worker_environment):
    process = subprocess.Popen(
        [sys.executable, "manage.py", "db_worker", "--interval", "0.2", "--no-startup-delay", "--no-reload"],
        cwd=ROOT,
        env=worker_environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    yield process
    process.terminate()
    process.wait(timeout=30)


@pytest.mark.django_db(transaction=True)
def test_admin_starts_a_round_watches_it_and_judges_what_it_generated(
    live_server, browser_page, chat_model_dir, settings, worker
):
    settings.PREFLOOP_MIN_PAIRS = 4
    UserFactory(username="boss", password="boss-password-123", is_staff=True, is_superuser=True)
    judged_policy(chat_model_dir)
    for i in range(2):
        PromptFactory(text=f"answer briefly please {i}")
    page = browser_page

    page.goto(f"{live_server.url}/login/?next=/training/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "boss-password-123")
    page.click("button[type=submit]")
    page.wait_for_selector("text=Start a round")
    assert "tiny — 4 pairs ready (4 needed)" in page.inner_text("select[name=policy]")
    for field, value in {
        "lr": "0.001",
        "batch_size": "2",
        "max_length": "64",
        "then_generate": "2",
        "samples": "2",
        "max_new_tokens": "8",
        "overlap": "1",
    }.items():
        page.fill(f"#id_{field}", value)
    page.click("button.primary")

    page.wait_for_selector("#round-live")
    page.wait_for_selector("#round-live[data-settled=true]", timeout=180_000)  # polled in by htmx
    training_round = TrainingRound.objects.get()
    assert training_round.status == RoundStatus.SUCCEEDED
    assert page.locator("#round-live polyline").count() == 3
    live = page.inner_text("#round-live")
    assert f"New policy: {training_round.output_policy.name}" in live
    assert "4 pairs, sha256" in live  # the Data row is inside the polled part: no reload needed
    assert "2 comparisons" in live and "Cancel" not in live
    assert "registered policy" in page.inner_text("pre.log")
    assert "queued 2 comparisons" in page.inner_text("pre.log")
    if path := os.environ.get("PREFLOOP_SCREENSHOT_ROUND"):
        page.screenshot(path=path, full_page=True)

    page.goto(f"{live_server.url}/training/")
    assert training_round.output_policy.name in page.inner_text("#leaderboard")

    page.goto(f"{live_server.url}/annotate/")  # staff judge too: next up is what the new policy wrote
    page.wait_for_selector("#judge")
    page.wait_for_load_state("domcontentloaded")  # annotate.js wires the keys once the page is parsed
    press_and_wait(page, "1")
    judged = Judgment.objects.filter(annotator__username="boss")
    assert judged.count() == 1
    assert judged.get().comparison.response_a.policy == training_round.output_policy


@pytest.mark.django_db(transaction=True)
def test_the_dashboards_tables_fit_a_1366_pixel_screen(live_server, browser_page):
    from tests.factories import CampaignFactory, ComparisonFactory, UserFactory

    UserFactory(username="boss", password="boss-password-123", is_staff=True, is_superuser=True)
    for i in range(3):
        ComparisonFactory(campaign=CampaignFactory(name=f"Round {i} blind evaluation of a long name"))
    page = browser_page
    page.set_viewport_size({"width": 1366, "height": 768})
    page.goto(f"{live_server.url}/training/")
    page.fill("#id_username", "boss")
    page.fill("#id_password", "boss-password-123")
    page.click("button[type=submit]")
    page.wait_for_selector("table")

    hidden = page.evaluate(
        "[...document.querySelectorAll('.table-scroll')].map(e => e.scrollWidth - e.clientWidth)"
    )
    assert hidden and all(width == 0 for width in hidden)  # every column of every table in view
