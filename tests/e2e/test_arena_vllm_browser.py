"""The arena in a real browser, answered by vLLM: the generation process as production runs it (its
resolver reads the registered policies), a base policy and its LoRA round's policy in one engine, the
arena runner writing the turn. A reload mid-answer re-attaches and shows each answer whole, once."""

import threading

import pytest

from annotate.models import ArenaTurn, Task, TurnStatus
from annotate.services.arena_runner import arena_runner_run
from annotate.services.campaigns import campaign_arena_pool_set, campaign_create
from generation.management.commands.generation_server import _resolve
from generation.server import server_make
from generation.services import policy_register, policy_register_embedded
from tests.factories import UserFactory

pytestmark = [pytest.mark.slow, pytest.mark.vllm]


@pytest.fixture
def vllm_arena(settings):
    """The generation process with vLLM engines and the arena runner, both in threads."""
    server = server_make(host="127.0.0.1", port=0, resolve=_resolve, engine="vllm", memory_gb=16)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.PREFLOOP_ARENA_URL = f"http://127.0.0.1:{server.server_address[1]}"
    stop = threading.Event()
    runner = threading.Thread(target=arena_runner_run, kwargs={"slots": 4, "stop": stop}, daemon=True)
    yield server.engines, runner
    stop.set()
    runner.join(timeout=30)
    server.shutdown()
    server.server_close()
    server.engines.close()


def _words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.django_db(transaction=True)
def test_the_arena_answers_through_vllm_and_a_reload_mid_answer_shows_each_answer_once(
    live_server, browser_page, lora_lineage, vllm_arena, settings
):
    settings.PREFLOOP_ARENA_MAX_NEW_TOKENS = 160
    settings.PREFLOOP_ARENA_TIMEOUT = 300  # the engine's first start, on 2 cores
    engines, runner = vllm_arena
    _, rounds = lora_lineage
    base = policy_register_embedded()
    adapter, merged = rounds["zebra"]
    child = policy_register(name="round-1", location=merged, parent=base, lora=(base.location, adapter))
    campaign = campaign_arena_pool_set(
        campaign=campaign_create(name="arena", task=Task.ARENA), policies=[base, child]
    )
    runner.start()  # it warms the pool's engine first
    UserFactory(username="kim", password="kim-password-123")
    page = browser_page
    page.goto(f"{live_server.url}/login/?next=/annotate/arena/{campaign.pk}/")
    page.fill("#id_username", "kim")
    page.fill("#id_password", "kim-password-123")
    page.click("button[type=submit]")

    page.fill("#arena textarea[name=text]", "Write a short story about a lighthouse keeper.")
    page.click("#arena-send")
    page.wait_for_function(
        "() => { const cards = [...document.querySelectorAll('#arena .response')];"
        " return cards.length === 2 && cards.every(c => c.innerText.trim().length > 20); }",
        timeout=300_000,
    )
    assert ArenaTurn.objects.get().status == TurnStatus.GENERATING
    page.reload()  # mid-answer: the page re-attaches to the same turn
    page.wait_for_selector("#judge", timeout=300_000)

    turn = ArenaTurn.objects.get()
    assert turn.status == TurnStatus.ANSWERED
    assert turn.finish_a in ("stop", "length") and turn.finish_b in ("stop", "length")
    [engine] = engines.status()  # the base and its LoRA round: one engine, the round's adapter in it
    assert engine["kind"] == "vllm" and engine["adapters"] == [merged]  # asked for by its policy's id
    cards = page.locator("#arena .response .md")
    shown = sorted(_words(cards.nth(i).inner_text()) for i in range(2))
    stored = sorted(_words(text) for text in (turn.text_a, turn.text_b))
    for on_page, whole in zip(shown, stored, strict=True):  # Markdown takes a few marks away, no more
        assert 0.8 * len(whole) <= len(on_page) <= len(whole) + 10  # whole, and once
    page.keyboard.press("1")
    page.wait_for_selector("text=Left was")
    assert "round-1" in page.inner_text("#arena")
    turn.refresh_from_db()
    assert turn.status == TurnStatus.VOTED
