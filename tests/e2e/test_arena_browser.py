"""The arena in a real browser: type a prompt, two hidden policies answer as they generate, vote,
see their names, go on for a second turn, vote again; the export holds both turns as pairs."""

import pytest

from annotate.models import ArenaTurn, Task, TurnStatus
from annotate.selectors import ExportReport, preference_rows
from annotate.services.campaigns import campaign_arena_pool_set, campaign_create
from tests.factories import PolicyFactory, UserFactory


@pytest.mark.django_db(transaction=True)
def test_an_annotator_holds_a_two_turn_conversation_and_votes_on_each(
    live_server, browser_page, chat_model_dir, arena_runner, settings
):
    settings.PREFLOOP_ARENA_MAX_NEW_TOKENS = 300  # long enough to arrive in several pieces
    UserFactory(username="kim", password="kim-password-123")
    pool = [PolicyFactory(name=f"tiny-{i}", location=str(chat_model_dir)) for i in range(2)]
    campaign = campaign_arena_pool_set(campaign=campaign_create(name="arena", task=Task.ARENA), policies=pool)
    page = browser_page
    page.goto(f"{live_server.url}/login/?next=/annotate/")
    page.fill("#id_username", "kim")
    page.fill("#id_password", "kim-password-123")
    page.click("button[type=submit]")
    page.click("text=Arena: arena")  # the judging page links the arenas open to me

    page.fill("#arena textarea[name=text]", "Tell me about <b>bold</b> tags")
    page.click("#arena-send")
    page.wait_for_selector("#judge", timeout=60_000)  # both ended: the vote buttons came with them
    first = ArenaTurn.objects.get()
    assert first.status == TurnStatus.ANSWERED
    cards = page.locator("#arena .response .md")
    assert cards.count() == 2 and cards.nth(0).inner_text().strip() and cards.nth(1).inner_text().strip()
    assert page.locator("#arena b").count() == 0  # the prompt's markup is text, not HTML
    assert "tiny-0" not in page.inner_text("#arena")  # names hidden until the vote

    page.keyboard.press("1")
    page.wait_for_selector("text=Left was")
    assert "tiny-0" in page.inner_text("#arena") and "tiny-1" in page.inner_text("#arena")

    page.fill("#arena textarea[name=text]", "And a second question?")
    page.click("#arena-continue")
    page.wait_for_selector("#judge", timeout=60_000)
    assert "Tell me about" in page.inner_text(".arena-history")  # the first turn stays above
    page.keyboard.press("3")
    page.wait_for_selector("text=Left was")

    turns = list(ArenaTurn.objects.order_by("number"))
    assert [t.status for t in turns] == [TurnStatus.VOTED, TurnStatus.VOTED]
    rows = list(preference_rows(report=ExportReport(), campaign=campaign, include_ties=True))
    assert len(rows) == 2
    assert rows[0]["prompt"] == [{"role": "user", "content": "Tell me about <b>bold</b> tags"}]
    assert [m["role"] for m in rows[1]["prompt"]] == ["user", "assistant", "user"]
    assert rows[1]["prompt"][-1]["content"] == "And a second question?"


def _arena_page(live_server, browser_page, chat_model_dir, settings):
    settings.PREFLOOP_ARENA_TURNS_PER_MINUTE = 1000
    UserFactory(username="kim", password="kim-password-123")
    pool = [PolicyFactory(name=f"tiny-{i}", location=str(chat_model_dir)) for i in range(2)]
    campaign = campaign_arena_pool_set(campaign=campaign_create(name="arena", task=Task.ARENA), policies=pool)
    page = browser_page
    page.goto(f"{live_server.url}/login/?next=/annotate/arena/{campaign.pk}/")
    page.fill("#id_username", "kim")
    page.fill("#id_password", "kim-password-123")
    page.click("button[type=submit]")
    return page, campaign


# Presses "1" inside the very mutation that brings the vote buttons in, before htmx has settled them.
PRESS_AS_THE_ANSWERS_END = """() => {
  window.__pressed = false;
  const seen = new MutationObserver(() => {
    if (!document.querySelector('#judge')) return;
    seen.disconnect();
    document.dispatchEvent(new KeyboardEvent('keydown', {key: '1', code: 'Digit1', bubbles: true}));
    window.__pressed = true;
  });
  seen.observe(document.body, {childList: true, subtree: true});
}"""


@pytest.mark.django_db(transaction=True)
def test_a_vote_key_pressed_as_the_answers_end_never_leaves_the_page_broken(
    live_server, browser_page, chat_model_dir, arena_runner, settings
):
    page, campaign = _arena_page(live_server, browser_page, chat_model_dir, settings)
    for round_number in range(20):
        page.fill("#arena textarea[name=text]", f"Question {round_number}?")
        page.evaluate(PRESS_AS_THE_ANSWERS_END)
        page.click("#arena-send")
        page.wait_for_function("() => window.__pressed", timeout=60_000)
        page.wait_for_selector("text=Left was", timeout=15_000)  # the vote went through htmx

        assert page.locator("header.top").count() == 1, f"the page lost its frame on try {round_number}"
        assert page.url.endswith(f"/annotate/arena/{campaign.pk}/")  # no plain form post
        page.click("#arena-new")
        page.wait_for_selector("#arena-send")
    assert ArenaTurn.objects.filter(status=TurnStatus.VOTED).count() == 20
