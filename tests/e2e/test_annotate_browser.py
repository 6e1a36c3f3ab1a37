"""A real browser judges by keyboard: headless Chromium against the live server."""

import os

import pytest

from annotate.models import Choice, Judgment, JudgmentRevision, Side, Strength
from tests.factories import ComparisonFactory, PromptFactory, ResponseFactory, UserFactory


def shown_comparison(page) -> int:
    return int(page.locator('#judge input[name="comparison"]').get_attribute("value"))


def judging_ready(page, selector: str = "#judge") -> None:
    """Wait for the judging form and for the page's deferred scripts (the keys are wired by
    annotate.js, which runs once the document is parsed: a key pressed before that does nothing)."""
    page.wait_for_selector(selector)
    page.wait_for_load_state("domcontentloaded")


def press_and_wait(page, key: str) -> None:
    """Press a judging key and wait until the next comparison is shown and settled (htmx has wired
    its form: the page ignores keys until then)."""
    before = shown_comparison(page) if page.locator("#judge").count() else None
    page.evaluate(
        "() => { window.__settled = false;"
        " document.addEventListener('htmx:afterSettle', () => { window.__settled = true; }, {once: true}); }"
    )
    page.keyboard.press(key)
    page.wait_for_function(
        "before => { const i = document.querySelector('#judge input[name=comparison]');"
        " return window.__settled && (!i || i.value !== String(before)); }",
        arg=before,
    )


@pytest.mark.django_db(transaction=True)
def test_annotator_judges_three_by_keyboard_and_changes_one(live_server, browser_page):
    UserFactory(username="kim", password="kim-password-123")
    prompt = PromptFactory(text="Explain `git rebase` in one line.")
    ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, text="Replays your commits on top of another branch."),
        response_b=ResponseFactory(
            prompt=prompt,
            text="```sh\ngit rebase main\n```\nMoves commits and then",
            finish_reason="length",
            token_count=160,
        ),
    )
    for _ in range(3):
        ComparisonFactory()
    page = browser_page

    page.goto(f"{live_server.url}/annotate/")
    page.fill("#id_username", "kim")
    page.fill("#id_password", "kim-password-123")
    page.click("button[type=submit]")
    judging_ready(page)
    page.evaluate("window.__sameDocument = true")
    if path := os.environ.get("PREFLOOP_SCREENSHOT"):
        page.screenshot(path=path, full_page=True)

    # An answer cut by the length limit says so (one of the two, whichever side it is shown on).
    assert page.locator(".response .cutoff").count() == 1
    assert "Cut off at the length limit (160 tokens)" in page.inner_text(".response .cutoff")

    served = [shown_comparison(page)]
    press_and_wait(page, "1")
    assert "Recorded on the previous comparison: Left better" in page.inner_text(".recorded")
    served.append(shown_comparison(page))
    press_and_wait(page, "Shift+Digit2")
    assert "Right clearly better" in page.inner_text(".recorded")
    served.append(shown_comparison(page))
    # Typing in the rationale box must not judge; Escape leaves it and the keys work again.
    page.click("textarea[name=rationale]")
    page.keyboard.type("34 reasons")
    assert Judgment.objects.count() == 2
    page.keyboard.press("Escape")
    press_and_wait(page, "3")

    assert page.evaluate("window.__sameDocument") is True  # no full page load happened
    assert page.evaluate("document.activeElement.id") == "comparison"
    assert "Judged today: 3" in page.inner_text("#progress")
    assert "Tie (with your note)" in page.inner_text(".recorded")

    # One-step undo: U opens the judgment just recorded; changing it returns to the queue.
    page.keyboard.press("u")
    page.wait_for_selector("text=Review your judgment")
    assert page.is_checked('input[name="answer"][value="tie"]')
    page.check('input[name="answer"][value="right"]')
    page.click("text=Save change")
    judging_ready(page)
    undone = Judgment.objects.get(comparison_id=served[2])
    assert undone.choice != undone.left and undone.choice != Choice.TIE
    assert JudgmentRevision.objects.get(judgment=undone).choice == Choice.TIE

    judgments = {j.comparison_id: j for j in Judgment.objects.all()}
    assert list(judgments) == served
    first, second, third = (judgments[pk] for pk in served)
    assert first.choice == first.left and first.strength == ""
    assert second.choice != second.left and second.strength == Strength.CLEAR
    assert third.rationale == "34 reasons"
    assert all(j.left in Side.values and j.time_on_task_ms is not None for j in judgments.values())

    page.click("text=My judgments")
    rows = page.inner_text("table.mine")
    # Verdicts as the annotator saw them, with both answers in the order shown and the rationale.
    assert "Left better" in rows and "Right clearly better" in rows and "Right better" in rows
    assert "Replays your commits" in rows and "34 reasons" in rows
    page.locator("table.list tr", has_text="git rebase").locator("text=Review / change").click()
    page.check('input[name="answer"][value="both_bad"]')
    page.click("text=Save change")
    page.wait_for_selector("table.list")

    first.refresh_from_db()
    assert first.choice == Choice.BOTH_BAD
    assert JudgmentRevision.objects.get(judgment=first).choice == first.left
    assert Judgment.objects.count() == 3


@pytest.mark.django_db(transaction=True)
def test_annotator_rewrites_the_better_answer_from_the_judging_page(live_server, browser_page):
    from annotate.selectors import ExportReport, dataset_rows
    from annotate.services.queue import comparison_assign_next

    kim = UserFactory(username="kim", password="kim-password-123")
    prompt = PromptFactory(text="What is a glacier?")
    comparison = ComparisonFactory(
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, text="A glacier is a slow river of ice."),
        response_b=ResponseFactory(prompt=prompt, text="<script>alert(1)</script> Ice."),
    )
    page = browser_page
    page.goto(f"{live_server.url}/annotate/")
    page.fill("#id_username", "kim")
    page.fill("#id_password", "kim-password-123")
    page.click("button[type=submit]")
    judging_ready(page)
    left = comparison_assign_next(annotator=kim).left  # the side served: first or second on the left
    left_text = (comparison.response_a if left == Side.FIRST else comparison.response_b).text

    page.keyboard.press("e")  # opens the edit box and puts the cursor in it
    assert page.evaluate("document.activeElement.name") == "edit"
    page.click("#edit button[data-copy=left]")
    assert page.input_value("textarea[name=edit]") == left_text  # the raw text, not run as markup
    assert page.input_value("select[name=edit_of]") == "left"
    page.keyboard.press("End")
    page.keyboard.type(" It moves downhill under its own weight.")
    assert Judgment.objects.count() == 0  # typing in the box judges nothing
    page.keyboard.press("Escape")
    press_and_wait(page, "1")

    judgment = Judgment.objects.get()
    edit = judgment.edit
    assert edit.text == left_text + " It moves downhill under its own weight."
    assert edit.author == kim and edit.policy is None and edit.improves.text == left_text
    rows = list(dataset_rows(report=ExportReport(), fmt="standard"))
    edited = [r for r in rows if r.get("edit_id") == edit.pk]
    assert {r["rejected"] for r in edited} == {comparison.response_a.text, comparison.response_b.text}
    assert all(r["chosen"] == edit.text for r in edited)


@pytest.mark.django_db(transaction=True)
def test_annotator_gives_thumbs_by_keyboard_in_a_thumbs_campaign(live_server, browser_page):
    from annotate.models import Task
    from tests.factories import CampaignFactory

    UserFactory(username="kim", password="kim-password-123")
    thumbs = CampaignFactory(name="thumbs", task=Task.THUMBS)
    items = []
    prompt = PromptFactory(text="What is a glacier?")
    for text in ("A glacier is a slow river of ice.", "Glaciers are GASLEMBRA!"):
        items.append(
            ComparisonFactory(
                prompt=prompt,
                response_a=ResponseFactory(prompt=prompt, text=text),
                response_b=None,
                campaign=thumbs,
            )
        )
    page = browser_page
    page.goto(f"{live_server.url}/annotate/")
    page.fill("#id_username", "kim")
    page.fill("#id_password", "kim-password-123")
    page.click("button[type=submit]")
    judging_ready(page)

    verdicts = {}
    for _ in items:
        shown = page.inner_text(".responses.thumbs .md")
        key = "1" if "slow river" in shown else "2"  # 1 good, 2 bad
        verdicts[shown.strip()] = "good" if key == "1" else "bad"
        press_and_wait(page, key)
        assert ("Good" if key == "1" else "Bad") in page.inner_text(".recorded")

    assert dict(Judgment.objects.values_list("comparison__response_a__text", "choice")) == {
        "A glacier is a slow river of ice.": Choice.GOOD,
        "Glaciers are GASLEMBRA!": Choice.BAD,
    }
    assert verdicts == {"A glacier is a slow river of ice.": "good", "Glaciers are GASLEMBRA!": "bad"}
    assert "All caught up" in page.inner_text("#comparison")


@pytest.mark.django_db(transaction=True)
def test_annotator_ranks_four_answers_with_three_keys_ties_included(live_server, browser_page):
    from annotate.models import Task
    from tests.factories import CampaignFactory

    UserFactory(username="kim", password="kim-password-123")
    prompt = PromptFactory(text="What is a glacier?")
    texts = ["A slow river of ice.", "Ice that moves.", "Frozen water, moving.", "GASLEMBRA!"]
    answers = [ResponseFactory(prompt=prompt, text=t) for t in texts]
    item = ComparisonFactory(
        prompt=prompt,
        response_a=answers[0],
        response_b=answers[1],
        response_c=answers[2],
        response_d=answers[3],
        campaign=CampaignFactory(name="rank", task=Task.RANKINGS),
    )
    page = browser_page
    page.goto(f"{live_server.url}/annotate/")
    page.fill("#id_username", "kim")
    page.fill("#id_password", "kim-password-123")
    page.click("button[type=submit]")
    judging_ready(page, "#judge.rank-form")
    shown = [page.inner_text(f'section[aria-label="Answer {n}"] .md').strip() for n in range(1, 5)]
    number = {text: str(shown.index(text) + 1) for text in texts}

    # best first: "A slow river" then "Ice that moves" tied with "Frozen water", then the last by itself
    page.keyboard.press(f"Digit{number[texts[0]]}")
    page.keyboard.press("Digit9")  # no such answer: nothing happens
    page.keyboard.press(f"Digit{number[texts[3]]}")
    page.keyboard.press("Backspace")  # taken back
    page.keyboard.press(f"Digit{number[texts[1]]}")
    assert "Your ranking:" in page.inner_text("#rank-order")
    page.keyboard.press("=")
    press_and_wait(page, f"Digit{number[texts[2]]}")  # the last answer places itself; it is sent

    judgment = Judgment.objects.get()
    assert judgment.comparison == item and judgment.ranking == [1, 2, 2, 3]
    expected = (
        f"Answer {number[texts[0]]}, then "
        + " = ".join(f"Answer {n}" for n in sorted([number[texts[1]], number[texts[2]]]))
        + f", then Answer {number[texts[3]]}"
    )
    assert expected in page.inner_text(".recorded")  # in the numbers shown, not stored letters

    # U opens the ranking just recorded; it is changed there, in the same numbers, and kept as a revision.
    page.keyboard.press("u")
    page.wait_for_selector("select[name=rank_4]")
    for text, rank in zip(texts, ["4", "3", "2", "1"], strict=True):  # now the other way round
        page.select_option(f"select[name=rank_{number[text]}]", rank)
    page.click("text=Save change")
    page.wait_for_url(f"{live_server.url}/annotate/")
    judgment.refresh_from_db()
    assert judgment.ranking == [4, 3, 2, 1] and judgment.revisions.get().ranking == [1, 2, 2, 3]


@pytest.mark.django_db(transaction=True)
def test_on_a_phone_the_verdict_keys_stay_on_screen_while_judging_long_pairs(live_server, browser_page):
    UserFactory(username="kim", password="kim-password-123")
    long = "\n\n".join(f"Paragraph {i}: " + "a sentence that goes on " * 12 for i in range(30))
    for n in range(3):
        prompt = PromptFactory(text=f"Explain topic {n} at length.")
        ComparisonFactory(
            prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, text=long),
            response_b=ResponseFactory(prompt=prompt, text=long + " (the other)"),
        )
    page = browser_page
    page.set_viewport_size({"width": 390, "height": 844})
    page.goto(f"{live_server.url}/annotate/")
    page.fill("#id_username", "kim")
    page.fill("#id_password", "kim-password-123")
    page.click("button[type=submit]")
    judging_ready(page)

    def keys_on_screen() -> bool:
        box = page.locator('#judge button[value="left"]').bounding_box()
        return box is not None and 0 <= box["y"] and box["y"] + box["height"] <= 844

    assert keys_on_screen()  # without scrolling down past two long answers
    page.mouse.wheel(0, 600)  # reading the answers
    assert keys_on_screen()
    first = shown_comparison(page)
    page.click('#judge button[value="left"]')
    page.wait_for_function(
        "before => { const i = document.querySelector('#judge input[name=comparison]');"
        " return i && i.value !== String(before); }",
        arg=first,
    )
    assert keys_on_screen()  # and again for the next one, with no scrolling back to find them
    assert Judgment.objects.filter(comparison_id=first).count() == 1
    header = page.locator("header.top").bounding_box()
    assert header["height"] <= 60
    width = page.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 390  # nothing runs off the side


def log_in(page, live_server) -> None:
    log_in_to(page, live_server, "/annotate/")
    judging_ready(page)


@pytest.mark.django_db(transaction=True)
def test_back_then_another_answer_says_the_first_stands_and_skip_is_confirmed_and_undone(
    live_server, browser_page
):
    UserFactory(username="kim", password="kim-password-123")
    for _ in range(3):
        ComparisonFactory()
    page = browser_page
    log_in(page, live_server)
    first = shown_comparison(page)
    press_and_wait(page, "1")
    page.click("text=My judgments")
    page.wait_for_selector("table.mine")

    page.go_back()  # not cached: the queue is fetched again, showing the next comparison, not the judged one
    judging_ready(page)
    assert shown_comparison(page) != first
    # An answer posted for the judged one anyway (a page kept from before) says what happened.
    page.evaluate(f"document.querySelector('#judge input[name=comparison]').value = '{first}'")
    press_and_wait(page, "2")
    notice = page.inner_text(".not-recorded")
    assert "You had already judged that comparison: Left better stands" in notice and "not recorded" in notice
    judgment = Judgment.objects.get(comparison_id=first)
    assert judgment.choice == judgment.left  # the first answer stands

    skipped = shown_comparison(page)
    press_and_wait(page, "s")
    assert "Skipped the previous comparison" in page.inner_text("#comparison")
    press_and_wait(page, "u")  # U takes the skip back: the skipped comparison comes again
    assert shown_comparison(page) == skipped


@pytest.mark.django_db(transaction=True)
def test_a_campaign_paused_while_judging_moves_the_annotator_on_with_keys_working(live_server, browser_page):
    from annotate.models import Campaign

    UserFactory(username="kim", password="kim-password-123")
    paused = ComparisonFactory(campaign__name="autumn", campaign__priority=5)
    other = ComparisonFactory(campaign__name="winter")
    ComparisonFactory(campaign=other.campaign)
    page = browser_page
    log_in(page, live_server)
    assert shown_comparison(page) == paused.pk
    Campaign.objects.filter(pk=paused.campaign_id).update(status="paused")

    press_and_wait(page, "1")

    assert "Campaign 'autumn' was paused by staff: your answer was not recorded" in page.inner_text(".notice")
    assert shown_comparison(page) == other.pk
    press_and_wait(page, "1")  # the keys still work, without a reload
    assert Judgment.objects.filter(comparison=other).count() == 1
    assert "Judged today: 1" in page.inner_text("#progress")


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("width", [1366, 390])
def test_my_judgments_with_rankings_keeps_review_change_in_view_and_the_page_from_scrolling_sideways(
    live_server, browser_page, width
):
    from annotate.models import Task
    from tests.factories import CampaignFactory, JudgmentFactory

    kim = UserFactory(username="kim", password="kim-password-123")
    prompt = PromptFactory(text="Name a colour " + "and a shade " * 20)
    texts = [f"Answer {i}: " + "https://example.org/" + "a-very-long-unbroken-path" * 8 for i in range(4)]
    answers = [ResponseFactory(prompt=prompt, text=t) for t in texts]
    rankings = CampaignFactory(name="a rankings campaign with a long name", task=Task.RANKINGS)
    for _ in range(3):
        comparison = ComparisonFactory(
            prompt=prompt,
            campaign=rankings,
            response_a=answers[0],
            response_b=answers[1],
            response_c=answers[2],
            response_d=answers[3],
        )
        JudgmentFactory(comparison=comparison, annotator=kim, ranking=[1, 2, 3, 4], left=Side.FIRST)
    page = browser_page
    page.set_viewport_size({"width": width, "height": 800})
    log_in_to(page, live_server, "/annotate/mine/")

    page.wait_for_selector("table.mine")
    link = page.locator("table.mine a", has_text="Review / change").first
    box, frame = link.bounding_box(), page.locator(".table-scroll").bounding_box()
    assert box is not None and box["x"] >= frame["x"]  # shown, and within its box: not clipped
    assert box["x"] + box["width"] <= min(width, frame["x"] + frame["width"])
    assert page.evaluate("document.documentElement.scrollWidth") <= width  # the page does not scroll sideways
    scroller = page.locator(".table-scroll")
    inner = scroller.evaluate("e => e.scrollWidth - e.clientWidth")
    assert width > 1000 or inner <= 1  # a phone: each judgment a card, no sideways scroller inside either
    if width < 1000:
        named = "e => getComputedStyle(e, '::before').content"  # each field named on its card
        assert page.locator('table.mine td[data-label="Prompt"]').first.evaluate(named) == '"Prompt: "'


def log_in_to(page, live_server, path: str) -> None:
    page.goto(f"{live_server.url}/login/?next={path}")
    page.fill("#id_username", "kim")
    page.fill("#id_password", "kim-password-123")
    page.click("button[type=submit]")


@pytest.mark.django_db(transaction=True)
def test_after_u_a_key_changes_the_judgment_and_the_page_says_what_was_saved(live_server, browser_page):
    UserFactory(username="kim", password="kim-password-123")
    for _ in range(2):
        ComparisonFactory()
    page = browser_page
    log_in(page, live_server)
    first = shown_comparison(page)
    press_and_wait(page, "1")
    page.keyboard.press("u")  # opens the judgment just recorded
    page.wait_for_selector("#change-form")

    with page.expect_navigation():
        page.keyboard.press("4")  # no mouse: the key changes it and saves

    assert "Saved: your judgment is now “Both bad”." in page.inner_text("main")
    judgment = Judgment.objects.get(comparison_id=first)
    assert judgment.choice == Choice.BOTH_BAD and judgment.revisions.count() == 1
