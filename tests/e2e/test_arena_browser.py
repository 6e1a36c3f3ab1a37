"""The arena in a real browser: type a prompt, two hidden policies answer as they generate, vote,
see their names, go on for a second turn, vote again; the export holds both turns as pairs."""

import pytest
from django.contrib.auth import get_user_model

from annotate.models import ArenaTurn, Task, TurnStatus
from annotate.selectors import ExportReport, preference_rows
from annotate.services.campaigns import campaign_arena_pool_set, campaign_create
from tests.factories import PolicyFactory, UserFactory


@pytest.mark.django_db(transaction=True)
def test_an_annotator_holds_a_two_turn_conversation_and_votes_on_each(
    live_server, browser_page, chat_model_dir, arena_runner, settings
):
    settings.PREFLOOP_ARENA_MAX_NEW_TOKENS = 24  # within the tiny model's 256-token window, with the prompt
    page, campaign = _arena_page(live_server, browser_page, chat_model_dir, settings, start="/annotate/")
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


def _arena_page(live_server, browser_page, chat_model_dir, settings, start=""):
    """kim, logged in at ``start`` (default: the arena's page), with an arena of two tiny policies."""
    settings.PREFLOOP_ARENA_TURNS_PER_MINUTE = 1000
    UserFactory(username="kim", password="kim-password-123")
    pool = [PolicyFactory(name=f"tiny-{i}", location=str(chat_model_dir)) for i in range(2)]
    campaign = campaign_arena_pool_set(campaign=campaign_create(name="arena", task=Task.ARENA), policies=pool)
    page = browser_page
    page.goto(f"{live_server.url}/login/?next={start or f'/annotate/arena/{campaign.pk}/'}")
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


@pytest.mark.django_db(transaction=True)
def test_a_long_prompt_is_refused_up_front_in_words_and_a_failed_turn_always_has_a_way_out(
    live_server, browser_page, chat_model_dir, arena_runner, settings
):
    settings.PREFLOOP_ARENA_MAX_NEW_TOKENS = 24
    page, _ = _arena_page(live_server, browser_page, chat_model_dir, settings)
    assert "Up to 232 tokens: about 174 words" in page.inner_text("#arena")  # said before anything is typed
    long_text = "please summarise the history of rivers and seas " * 100

    page.fill("#arena textarea[name=text]", long_text)
    page.click("#arena-send")
    page.wait_for_selector("#arena .notice")

    assert "these models read at most 232 tokens" in page.inner_text("#arena .notice")
    assert page.input_value("#arena textarea[name=text]").strip() == long_text.strip()  # nothing lost
    assert not ArenaTurn.objects.exists()

    settings.PREFLOOP_ARENA_URL = "http://127.0.0.1:9"  # the engine is down: the turn fails
    page.fill("#arena textarea[name=text]", "A short question?")
    page.click("#arena-send")
    page.wait_for_selector("text=The conversation is kept", timeout=30_000)
    assert "127.0.0.1" not in page.inner_text("#arena")  # no internal address on the page
    page.click("#arena-new")  # the way out, on the failed turn itself
    page.wait_for_selector("#arena-send")
    page.goto(page.url)  # and reopening the arena does not trap them in it either
    page.wait_for_selector("#arena-new, #arena-send")


@pytest.mark.django_db(transaction=True)
def test_a_refused_continue_keeps_the_typed_text_and_says_why_where_it_was_typed(
    live_server, browser_page, chat_model_dir, arena_runner, settings
):
    from playwright.sync_api import expect

    settings.PREFLOOP_ARENA_MAX_NEW_TOKENS = 24
    page, _ = _arena_page(live_server, browser_page, chat_model_dir, settings)
    page.set_viewport_size({"width": 1280, "height": 600})
    page.fill("#arena textarea[name=text]", "A first question?")
    page.click("#arena-send")
    page.wait_for_selector("#judge", timeout=60_000)
    page.keyboard.press("2")
    page.wait_for_selector("#arena-continue")
    settings.PREFLOOP_ARENA_TURNS_PER_MINUTE = 1  # the next pair is refused

    page.fill("#arena textarea[name=text]", "My careful follow-up, typed at length.")
    page.keyboard.press("Control+Enter")  # sends from the box
    page.wait_for_selector("#arena-refused")

    expect(page.locator("#arena-refused")).to_be_in_viewport()
    assert "in the last minute" in page.inner_text("#arena-refused")
    assert page.input_value("#arena textarea[name=text]") == "My careful follow-up, typed at length."


@pytest.mark.django_db(transaction=True)
def test_a_second_tab_keeps_its_text_through_a_refusal_and_the_stream_and_vote_keys_say_or_do_no_harm(
    live_server, browser_page, chat_model_dir, settings
):
    """Tab B sends a message while tab A's pair is still being written in the same conversation: the
    refusal says so and the text comes back in tab B's box once that pair is voted on; a vote key
    pressed while answers stream says why nothing happened; a vote key pressed twice leaves no digit
    in the next message box. (No runner: the test writes the answers, as the runner would.)"""
    from annotate.services import arena

    page, campaign = _arena_page(live_server, browser_page, chat_model_dir, settings)
    annotator = get_user_model().objects.get(username="kim")

    def answer(turn):
        ArenaTurn.objects.filter(pk=turn.pk).update(
            status=TurnStatus.ANSWERED,
            text_a=f"One {turn.pk}.",
            text_b=f"Two {turn.pk}.",
            finish_a="stop",
            finish_b="stop",
        )

    first = arena.conversation_start(campaign=campaign, annotator=annotator, text="A first question?")
    answer(first)
    arena.turn_vote(turn=first, annotator=annotator, verdict="left")
    page.goto(page.url)  # tab B: the voted turn, its message box
    arena.turn_continue(conversation=first.conversation, annotator=annotator, text="From tab A.")  # tab A

    page.fill("#arena textarea[name=text]", "Tab B's careful message.")
    page.click("#arena-continue")
    page.wait_for_selector("#arena-refused")
    assert "still being written in this conversation" in page.inner_text("#arena-refused")
    page.keyboard.press("1")  # too early: said, not silently dropped
    page.wait_for_selector("#arena-wait", state="visible")

    answer(ArenaTurn.objects.get(number=2))  # tab A's pair ends: the stream brings the vote buttons
    page.wait_for_selector("#judge", timeout=30_000)
    page.keyboard.press("2")
    page.keyboard.press("2")  # pressed twice: the second must not land in the message box
    page.wait_for_selector("#arena-continue")
    page.wait_for_timeout(300)
    assert page.input_value("#arena textarea[name=text]") == "Tab B's careful message."
    assert ArenaTurn.objects.get(number=2).status == TurnStatus.VOTED
