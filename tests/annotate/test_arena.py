"""The arena: live answers from two hidden policies, voted turn by turn, stored as comparisons."""

import json
import random
import threading
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from annotate.errors import ArenaBusy, CampaignNotOpen, JudgmentSteered, TurnChanged
from annotate.models import (
    ArenaConversation,
    ArenaRequest,
    ArenaTurn,
    Campaign,
    CampaignStatus,
    Choice,
    Comparison,
    Judgment,
    Side,
    Task,
    TurnStatus,
)
from annotate.selectors import ExportReport, preference_rows
from annotate.services import arena
from annotate.services.campaigns import campaign_arena_pool_set, campaign_create
from config.errors import Invalid
from generation.models import Prompt
from tests.factories import ComparisonFactory, JudgmentFactory, PolicyFactory, PromptFactory
from training.leaderboard import policy_games


@pytest.fixture
def pool(chat_model_dir, settings):
    settings.PREFLOOP_ARENA_MAX_NEW_TOKENS = 6
    return [PolicyFactory(name=f"tiny-{i}", location=str(chat_model_dir)) for i in range(2)]


@pytest.fixture
def campaign(pool):
    created = campaign_create(name="arena", task=Task.ARENA)
    return campaign_arena_pool_set(campaign=created, policies=pool)


def answered(turn):
    """What the arena runner does for one turn: take it (the oldest waiting), write both answers."""
    taken = arena.turn_next_claim()
    assert taken is not None and taken.pk == turn.pk
    arena.turn_generate(turn=taken)
    turn.refresh_from_db()


@pytest.mark.django_db
def test_a_turn_streams_both_answers_then_the_vote_becomes_a_comparison(
    campaign, annotator, generation_server, pool
):
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="What is a haiku?")

    answered(turn)

    assert turn.status == TurnStatus.ANSWERED and turn.text_a and turn.text_b
    assert {turn.finish_a, turn.finish_b} <= {"stop", "length"}
    conversation = turn.conversation
    assert {conversation.policy_a, conversation.policy_b} == set(pool)

    judgment = arena.turn_vote(turn=turn, annotator=annotator, verdict="left", strength="clear")

    comparison = turn.comparison
    assert comparison.campaign == campaign and comparison.prompt.text == "What is a haiku?"
    assert (comparison.response_a.policy, comparison.response_b.policy) == (
        conversation.policy_a,
        conversation.policy_b,
    )
    assert (comparison.response_a.text, comparison.response_b.text) == (turn.text_a, turn.text_b)
    left_is_a = conversation.left == Side.FIRST
    assert judgment.choice == (Choice.FIRST if left_is_a else Choice.SECOND)  # left, mapped to a or b
    assert judgment.left == conversation.left and judgment.strength == "clear"
    assert "arena" in {t.name for t in comparison.prompt.tags.all()}
    games = policy_games()
    assert [(g.a, g.b, g.score) for g in games] == [
        (conversation.policy_a.pk, conversation.policy_b.pk, 1.0 if left_is_a else 0.0)
    ]


@pytest.mark.django_db
def test_the_conversation_goes_on_from_the_preferred_answer_and_exports_as_multi_turn_pairs(
    campaign, annotator, generation_server
):
    first = arena.conversation_start(campaign=campaign, annotator=annotator, text="Name a colour.")
    answered(first)
    arena.turn_vote(turn=first, annotator=annotator, verdict="right")
    left_is_a = first.conversation.left == Side.FIRST
    preferred = first.text_b if left_is_a else first.text_a

    second = arena.turn_continue(conversation=first.conversation, annotator=annotator, text="Another one?")
    assert second.number == 2
    assert second.messages == [
        {"role": "user", "content": "Name a colour."},
        {"role": "assistant", "content": preferred.strip()},
        {"role": "user", "content": "Another one?"},
    ]
    answered(second)
    arena.turn_vote(turn=second, annotator=annotator, verdict="tie")

    rows = list(
        preference_rows(report=ExportReport(), campaign=campaign, include_ties=True, fmt="conversational")
    )
    assert len(rows) == 2
    assert rows[1]["prompt"] == second.messages
    assert Prompt.objects.filter(messages=second.messages).exists()  # a prompt of the campaign now
    with pytest.raises(TurnChanged, match="still being written in this conversation"):
        third = arena.turn_continue(conversation=first.conversation, annotator=annotator, text="More?")
        arena.turn_continue(conversation=third.conversation, annotator=annotator, text="And more?")


@pytest.mark.django_db
def test_pairs_are_drawn_so_every_pair_gets_votes(chat_model_dir, annotator):
    policies = [PolicyFactory(location=str(chat_model_dir)) for _ in range(3)]
    campaign = campaign_arena_pool_set(
        campaign=campaign_create(name="a3", task=Task.ARENA), policies=policies
    )
    rng = random.Random(0)
    met = []
    for _ in range(6):  # each drawn pair is voted on: the next draw takes a pair with fewer votes
        a, b = arena.arena_pair_draw(campaign=campaign, rng=rng)
        met.append(frozenset((a.pk, b.pk)))
        conversation = ArenaConversation.objects.create(
            campaign=campaign, annotator=annotator, policy_a=a, policy_b=b, left=Side.FIRST
        )
        ArenaTurn.objects.create(
            conversation=conversation,
            number=1,
            messages=[{"role": "user", "content": "x"}],
            status=TurnStatus.VOTED,
            comparison=ComparisonFactory(campaign=campaign),
        )
    assert len(set(met[:3])) == 3 and len(set(met[3:])) == 3  # every pair once, then every pair twice


@pytest.mark.django_db
def test_a_pool_of_one_answers_with_two_samples_that_train_it_but_play_no_game(
    campaign, pool, annotator, generation_server
):
    pool[1].held_back = True  # held back for drift: the pool has one policy left
    pool[1].save()
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="Name a bird.")
    answered(turn)
    arena.turn_vote(turn=turn, annotator=annotator, verdict="left")

    conversation = turn.conversation
    assert conversation.policy_a == conversation.policy_b == pool[0] and conversation.on_policy
    comparison = turn.comparison
    assert comparison.response_a != comparison.response_b  # two answers, one policy
    assert policy_games() == []  # no leaderboard game against itself
    rows = list(preference_rows(report=ExportReport(), campaign=campaign, include_ties=True))
    assert len(rows) == 1  # but an on-policy pair for training

    pool[0].held_back = True
    pool[0].save()
    with pytest.raises(Invalid, match="no policy to answer yet"):
        arena.conversation_start(campaign=campaign, annotator=annotator, text="hi")


@pytest.mark.django_db
def test_limits_one_pair_at_a_time_turns_per_minute_and_turns_per_conversation(
    campaign, annotator, generation_server, settings
):
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="one")
    with pytest.raises(ArenaBusy, match="still being written"):  # asked for, not yet taken: it counts
        arena.conversation_start(campaign=campaign, annotator=annotator, text="two")
    ArenaTurn.objects.filter(pk=turn.pk).update(status=TurnStatus.ANSWERED)
    settings.PREFLOOP_ARENA_TURNS_PER_MINUTE = 1
    with pytest.raises(ArenaBusy, match="in the last minute"):
        arena.conversation_start(campaign=campaign, annotator=annotator, text="three")
    settings.PREFLOOP_ARENA_TURNS_PER_MINUTE = 60
    settings.PREFLOOP_ARENA_MAX_TURNS = 1
    turn.refresh_from_db()
    arena.turn_vote(turn=turn, annotator=annotator, verdict="tie")
    with pytest.raises(Invalid, match="PREFLOOP_ARENA_MAX_TURNS"):
        arena.turn_continue(conversation=turn.conversation, annotator=annotator, text="next")
    with pytest.raises(Invalid, match="write a message"):
        arena.conversation_start(campaign=campaign, annotator=annotator, text="   ")
    with pytest.raises(Invalid, match="limit"):
        arena.conversation_start(
            campaign=campaign, annotator=annotator, text="x" * (settings.PREFLOOP_MAX_PROMPT_CHARS + 1)
        )


@pytest.mark.django_db
def test_a_generation_that_fails_says_so_and_the_conversation_is_kept(campaign, annotator, settings):
    settings.PREFLOOP_ARENA_URL = "http://127.0.0.1:9"  # nothing listens there
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="hello")

    answered(turn)

    assert turn.status == TurnStatus.FAILED
    assert "the left answer: the generation service could not be reached" in turn.error
    assert "127.0.0.1" not in turn.error  # no internal address shown to annotators
    with pytest.raises(TurnChanged, match="wait for both answers"):
        arena.turn_vote(turn=turn, annotator=annotator, verdict="left")
    again = arena.turn_regenerate(turn=turn, annotator=annotator)
    assert again.status == TurnStatus.GENERATING and again.messages == turn.messages and not again.error


@pytest.mark.django_db
def test_a_vote_sent_while_the_answers_are_written_is_refused_with_its_reason_on_the_page(
    client, campaign, annotator
):
    """A vote from a stale page or a second tab while both answers are still coming: 409, and the
    live fragment says why (it showed the streams with no message)."""
    client.force_login(annotator)
    client.post(reverse("annotate:arena", args=[campaign.pk]), {"text": "hello"}, HTTP_HX_REQUEST="true")
    turn = ArenaTurn.objects.get()
    early = client.post(
        reverse("annotate:arena-vote", args=[turn.pk]), {"answer": "left"}, HTTP_HX_REQUEST="true"
    )
    page = early.content.decode()
    assert early.status_code == 409 and "sse-connect" in page
    assert 'id="arena-refused">Wait for both answers (or regenerate them) before voting.' in page
    assert not Judgment.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_a_stop_pressed_while_the_runner_writes_keeps_what_was_written_marked_cut_off(
    campaign, annotator, generation_server, settings
):
    settings.PREFLOOP_ARENA_MAX_NEW_TOKENS = 4096  # far longer than the test waits
    settings.PREFLOOP_ARENA_TURNS_PER_MINUTE = 60
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="write a long story")
    for _ in range(8):  # the tiny random model sometimes ends both answers itself before the stop lands
        writing = threading.Thread(target=arena.turn_generate, kwargs={"turn": arena.turn_next_claim()})
        writing.start()
        deadline = time.monotonic() + 60
        while not ArenaTurn.objects.get(pk=turn.pk).text_a and time.monotonic() < deadline:
            time.sleep(0.02)  # the first words are stored, the answer goes on

        arena.turn_stop(turn=turn)
        writing.join(timeout=60)

        turn.refresh_from_db()
        assert not writing.is_alive() and turn.status == TurnStatus.ANSWERED
        if "cancelled" in {turn.finish_a, turn.finish_b}:
            break
        turn = arena.turn_regenerate(turn=turn, annotator=annotator)
    assert "cancelled" in {turn.finish_a, turn.finish_b} and turn.text_a  # kept, marked stopped
    with pytest.raises(TurnChanged, match="you stopped these answers, so they are not voted"):
        arena.turn_vote(turn=turn, annotator=annotator, verdict="left")
    assert not Comparison.objects.filter(campaign=campaign).exists()  # no fragment in training data
    assert arena.turn_regenerate(turn=turn, annotator=annotator).status == TurnStatus.GENERATING


@pytest.mark.django_db
def test_the_page_streams_escaped_text_then_the_vote_and_reveals_the_names(
    client, campaign, annotator, other_annotator, generation_server
):
    client.force_login(annotator)
    page = client.post(
        reverse("annotate:arena", args=[campaign.pk]),
        {"text": "<script>alert(1)</script>"},
        HTTP_HX_REQUEST="true",
    )
    turn = ArenaTurn.objects.get()
    assert (
        page.status_code == 200
        and f'sse-connect="/annotate/arena/turns/{turn.pk}/stream/"' in page.content.decode()
    )
    assert "<script>alert(1)</script>" not in page.content.decode()

    stream = client.get(reverse("annotate:arena-stream", args=[turn.pk]))
    chunks = iter(stream.streaming_content)
    assert next(chunks) == b": stream open\n\n"
    waiting = next(chunks).decode()  # nothing taken it yet: the stream says so, and writes nothing
    assert "event: left\n" in waiting and "Waiting for a free generation slot" in waiting
    ArenaTurn.objects.filter(pk=turn.pk).update(claimed_at=timezone.now(), text_a="Once <b>upon</b>")
    growing = next(chunks).decode()
    assert "Once &lt;b&gt;upon&lt;/b&gt;" in growing and "<b>" not in growing  # escaped as it grows
    assert ArenaTurn.objects.get(pk=turn.pk).status == TurnStatus.GENERATING  # a GET wrote nothing
    # taken seconds ago and still no text (an engine starting cold): the answer says why it waits
    ArenaTurn.objects.filter(pk=turn.pk).update(claimed_at=timezone.now() - timedelta(seconds=9), text_a="")
    slow = next(chunks).decode()
    assert "Still reading: the model may be starting up" in slow and slow.count("event: ") == 2
    ArenaTurn.objects.filter(pk=turn.pk).update(claimed_at=None, text_a="")

    answered(turn)  # the runner writes the answers; the open stream ends with them
    body = b"".join(chunks).decode()

    assert stream["Content-Type"] == "text/event-stream"
    assert body.rstrip().split("\n\n")[-1].startswith("event: done")
    assert 'id="judge"' in body.split("event: done")[1]  # the vote buttons come with the end
    assert turn.status == TurnStatus.ANSWERED

    again = b"".join(client.get(reverse("annotate:arena-stream", args=[turn.pk])).streaming_content).decode()
    assert again.count("event: done") == 1 and "event: left" not in again  # a finished turn: done at once

    voted = client.post(
        reverse("annotate:arena-vote", args=[turn.pk]), {"answer": "left"}, HTTP_HX_REQUEST="true"
    ).content.decode()
    assert "Left was" in voted and turn.conversation.policy_a.name in voted
    assert 'id="progress" class="progress" hx-swap-oob="true">Judged today: <strong>1</strong>' in voted

    client.force_login(other_annotator)  # another annotator cannot see, stream or vote on it
    assert client.get(reverse("annotate:arena-stream", args=[turn.pk])).status_code == 404
    assert client.post(reverse("annotate:arena-vote", args=[turn.pk]), {"answer": "left"}).status_code == 404


@pytest.mark.django_db
def test_a_refused_turn_keeps_the_conversation_and_the_text_on_the_page(
    client, campaign, annotator, generation_server, settings
):
    client.force_login(annotator)
    settings.PREFLOOP_ARENA_TURNS_PER_MINUTE = 0
    page = client.post(reverse("annotate:arena", args=[campaign.pk]), {"text": "my careful question"})
    assert page.status_code == 409
    html = page.content.decode()
    assert 'id="arena"' in html and "in the last minute" in html and "my careful question" in html


@pytest.mark.slow
@pytest.mark.django_db
def test_a_round_trains_on_the_arena_votes_of_its_policy_multi_turn_included(
    campaign, annotator, generation_server, pool, settings, tmp_path
):
    from training.execution import round_execute
    from training.models import RoundStatus
    from training.rounds import RoundRequest, round_create, round_pairs_count

    settings.PREFLOOP_ROUNDS_DIR = tmp_path / "rounds"
    first = arena.conversation_start(campaign=campaign, annotator=annotator, text="Name a fruit.")
    answered(first)
    # the tiny random model may end an answer at once, or say the same twice: the texts are set, so
    # the round always has two pairs to learn (an empty or identical pair is left out of the export)
    ArenaTurn.objects.filter(pk=first.pk).update(text_a="An apple.", text_b="A pear.")
    arena.turn_vote(turn=first, annotator=annotator, verdict="left")
    second = arena.turn_continue(
        conversation=first.conversation, annotator=annotator, text="And a vegetable?"
    )
    answered(second)
    ArenaTurn.objects.filter(pk=second.pk).update(text_a="A carrot.", text_b="A leek.")
    arena.turn_vote(turn=second, annotator=annotator, verdict="right")
    policy = pool[0]
    assert round_pairs_count(policy=policy)[0] == 2  # its arena votes, against another policy

    created = round_create(
        request=RoundRequest(
            policy=policy,
            min_pairs=2,
            hyperparameters={"lr": 1e-3, "batch_size": 2, "max_length": 128, "dtype": "fp32"},
        )
    )
    finished = round_execute(round_id=created.pk)

    assert finished.status == RoundStatus.SUCCEEDED, finished.log
    rows = [json.loads(line) for line in open(finished.data_file, encoding="utf-8")]
    assert [len(row["prompt"]) for row in rows] == [1, 3]  # the second turn's prompt is the conversation
    assert finished.output_policy in campaign.arena_policies.all()  # the new policy joins the arena


@pytest.mark.django_db
def test_a_turn_whose_runner_died_is_shown_stalled_and_can_be_regenerated(client, campaign, annotator):
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="hello")
    assert arena.turn_next_claim().pk == turn.pk  # a runner took it, then its process died
    ArenaTurn.objects.filter(pk=turn.pk).update(
        heartbeat_at=timezone.now() - timedelta(seconds=arena.HEARTBEAT_DEAD + 1)
    )
    client.force_login(annotator)

    body = b"".join(client.get(reverse("annotate:arena-stream", args=[turn.pk])).streaming_content).decode()

    assert "event: done" in body and "process writing these answers stopped" in body  # no endless wait
    assert 'id="arena-regenerate"' in body.split("event: done")[1] and "sse-connect" not in body
    assert ArenaTurn.objects.get(pk=turn.pk).status == TurnStatus.GENERATING  # the stream wrote nothing
    again = arena.turn_regenerate(turn=turn, annotator=annotator)
    assert again.status == TurnStatus.GENERATING and again.attempt == 2 and again.claimed_at is None


@pytest.mark.django_db
def test_a_turn_no_runner_takes_is_given_up_and_frees_the_annotator(campaign, annotator):
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="hello")
    ArenaTurn.objects.filter(pk=turn.pk).update(
        requested_at=timezone.now() - timedelta(seconds=arena.queue_wait() + 1)
    )

    started = arena.conversation_start(campaign=campaign, annotator=annotator, text="again")

    turn.refresh_from_db()
    assert turn.status == TurnStatus.FAILED and "no generation slot" in turn.error
    assert started.status == TurnStatus.GENERATING


# The security review's proofs (issue: the arena fit for annotators).


@pytest.mark.django_db
def test_a_turn_is_voted_once_whatever_the_order_of_stop_regenerate_and_late_streams(
    campaign, annotator, generation_server
):
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="Name a river.")
    first_attempt = arena.turn_next_claim()  # a runner writes attempt 1...
    arena.turn_stop(turn=turn)
    arena.turn_regenerate(turn=turn, annotator=annotator)  # ...stopped, regenerated before it ended
    answered(turn)  # attempt 2 answered
    arena.turn_vote(turn=turn, annotator=annotator, verdict="left")

    arena.turn_generate(turn=first_attempt)  # attempt 1 ends late: it must not reopen the turn
    with pytest.raises(TurnChanged, match="voted on already"):
        arena.turn_vote(turn=turn, annotator=annotator, verdict="right")
    with pytest.raises(Invalid, match="voted on already"):
        arena.turn_regenerate(turn=turn, annotator=annotator)
    answered_late = arena.turn_next_claim()  # nothing is waiting

    turn.refresh_from_db()
    assert turn.status == TurnStatus.VOTED and answered_late is None
    assert Comparison.objects.filter(campaign=campaign).count() == 1
    assert Judgment.objects.filter(comparison__campaign=campaign).count() == 1
    rows = list(preference_rows(report=ExportReport(), campaign=campaign, include_ties=True))
    assert len(rows) == 1


@pytest.mark.django_db
def test_the_limits_count_from_the_first_request_regenerations_included(campaign, annotator, settings):
    settings.PREFLOOP_ARENA_URL = "http://127.0.0.1:9"  # answers fail at once: nothing is busy after
    arena.conversation_start(campaign=campaign, annotator=annotator, text="one")
    for _ in range(5):  # back to back, none taken by a runner yet
        with pytest.raises(ArenaBusy, match="still being written"):
            arena.conversation_start(campaign=campaign, annotator=annotator, text="more")
    assert ArenaTurn.objects.count() == 1

    settings.PREFLOOP_ARENA_TURNS_PER_MINUTE = 3
    turn = ArenaTurn.objects.get()
    answered(turn)  # failed
    arena.turn_regenerate(turn=turn, annotator=annotator)  # the second request this minute
    answered(turn)
    arena.turn_regenerate(turn=turn, annotator=annotator)  # the third
    answered(turn)
    with pytest.raises(ArenaBusy, match="3 answer pairs asked for in the last minute"):
        arena.turn_regenerate(turn=turn, annotator=annotator)
    with pytest.raises(ArenaBusy, match="in the last minute"):
        arena.conversation_start(campaign=campaign, annotator=annotator, text="and a new one")


@pytest.mark.django_db
def test_a_closed_arena_regenerates_nothing(campaign, annotator, settings):
    settings.PREFLOOP_ARENA_URL = "http://127.0.0.1:9"
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="one")
    answered(turn)
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.CLOSED)

    with pytest.raises(CampaignNotOpen):
        arena.turn_regenerate(turn=turn, annotator=annotator)


@pytest.mark.django_db
def test_examples_come_only_from_prompts_the_annotator_may_see(campaign, annotator, other_annotator):
    from annotate.models import Campaign as CampaignModel

    hidden = campaign_create(name="members only", open_to_all=False)
    hidden_prompt = PromptFactory(text="a members-only prompt")
    ComparisonFactory(campaign=hidden, prompt=hidden_prompt)
    arena_prompt = PromptFactory(text="someone's arena prompt", source="arena")
    ComparisonFactory(campaign=campaign, prompt=arena_prompt)
    rng = random.Random(0)

    seen = {arena.campaign_prompt_example(campaign=campaign, annotator=annotator, rng=rng) for _ in range(20)}
    assert seen == {""}  # nothing they may see: no fallback to any prompt

    open_one = CampaignModel.objects.create(name="open", open_to_all=True)
    ComparisonFactory(campaign=open_one, prompt=PromptFactory(text="an open prompt"))
    hidden.members.add(other_annotator)
    assert {
        arena.campaign_prompt_example(campaign=campaign, annotator=annotator, rng=rng) for _ in range(20)
    } == {"an open prompt"}
    assert "a members-only prompt" in {
        arena.campaign_prompt_example(campaign=campaign, annotator=other_annotator, rng=rng)
        for _ in range(40)
    }


@pytest.mark.django_db
def test_an_arena_not_open_to_you_reads_as_one_that_does_not_exist(client, annotator):
    hidden = campaign_create(name="members arena", task=Task.ARENA, open_to_all=False)
    client.force_login(annotator)

    mine, unknown = client.get(f"/annotate/arena/{hidden.pk}/"), client.get("/annotate/arena/999999/")

    assert mine.status_code == unknown.status_code == 404
    assert f"no arena campaign with pk {hidden.pk}</strong>" in mine.content.decode()
    assert "no arena campaign with pk 999999</strong>" in unknown.content.decode()


@pytest.mark.django_db
def test_a_conversation_longer_than_the_models_read_is_refused_in_words_before_anything_is_asked(
    campaign, annotator, settings
):
    # The tiny models read 256 tokens; 6 are kept for the answer.
    assert arena.prompt_token_limit(arena.arena_pool(campaign)) == 250
    long_text = "tell me about the river and the sea " * 60

    with pytest.raises(
        Invalid, match=r"is [\d,]+ tokens long; these models read at most 250 tokens .*about 187 words"
    ):
        arena.conversation_start(campaign=campaign, annotator=annotator, text=long_text)

    assert not ArenaTurn.objects.exists() and not ArenaRequest.objects.exists()  # nothing asked for


@pytest.mark.django_db
def test_without_the_models_files_the_arena_cap_holds_and_cjk_text_is_not_undercounted(annotator, settings):
    settings.PREFLOOP_ARENA_MAX_PROMPT_TOKENS = 1000
    remote = [PolicyFactory(location="org/served-elsewhere"), PolicyFactory(location="org/other")]
    campaign = campaign_arena_pool_set(campaign=campaign_create(name="far", task=Task.ARENA), policies=remote)

    with pytest.raises(Invalid, match=r"at most 1,000 tokens .* by about \d+ of its 1,500 characters"):
        arena.conversation_start(
            campaign=campaign, annotator=annotator, text="漢字" * 750
        )  # 1,500 characters
    arena.conversation_start(campaign=campaign, annotator=annotator, text="a short question")


@pytest.mark.django_db(transaction=True)
def test_under_asgi_two_streams_of_a_turn_relay_it_from_one_watch_and_both_end_with_it(campaign, annotator):
    import asyncio

    from asgiref.sync import sync_to_async
    from django.test import AsyncClient

    from annotate import turn_watch

    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="hello")
    url = reverse("annotate:arena-stream", args=[turn.pk])
    reads = []
    real_rows = turn_watch._rows
    turn_watch._rows = lambda ids: reads.append(sorted(ids)) or real_rows(ids)

    async def scene():
        client = AsyncClient()
        await sync_to_async(client.force_login)(annotator)
        first, second = await client.get(url), await client.get(url)
        streams = [first.streaming_content.__aiter__(), second.streaming_content.__aiter__()]
        opened = [await s.__anext__() for s in streams]
        waiting = [await s.__anext__() for s in streams]
        watching = len(turn_watch.turn_watch().waiting[turn.pk])  # both streams, one watch
        await sync_to_async(ArenaTurn.objects.filter(pk=turn.pk).update)(
            status=TurnStatus.ANSWERED, text_a="one", text_b="two", finish_a="stop", finish_b="stop"
        )
        ends = [b"".join([chunk async for chunk in s]) for s in streams]
        return first, opened, waiting, watching, ends

    try:
        response, opened, waiting, watching, ends = asyncio.run(scene())
    finally:
        turn_watch._rows = real_rows

    assert response["Content-Type"] == "text/event-stream"
    assert opened == [b": stream open\n\n"] * 2 and watching == 2
    assert all(b"Waiting for a free generation slot" in w for w in waiting)
    assert all(end.decode().count("event: done") == 1 and 'id="judge"' in end.decode() for end in ends)
    assert reads and all(ids == [turn.pk] for ids in reads)  # one query per read, for both streams


@pytest.mark.django_db
def test_a_vote_the_conversation_went_on_from_no_longer_changes(
    client, campaign, annotator, generation_server
):
    from annotate.services.judgments import judgment_change

    first = arena.conversation_start(campaign=campaign, annotator=annotator, text="Name a colour.")
    answered(first)
    judgment = arena.turn_vote(turn=first, annotator=annotator, verdict="left")
    judgment_change(judgment=judgment, annotator=annotator, verdict="right")  # not yet gone on: it may
    arena.turn_continue(conversation=first.conversation, annotator=annotator, text="Another?")

    with pytest.raises(JudgmentSteered, match="the conversation went on from"):
        judgment_change(judgment=judgment, annotator=annotator, verdict="left")
    client.force_login(annotator)
    page = client.get(reverse("annotate:change", args=[judgment.pk])).content.decode()
    assert "no longer changes" in page and 'id="change-form"' not in page


@pytest.mark.django_db
def test_without_javascript_the_arena_posts_and_redirects_to_whole_pages(
    client, campaign, annotator, generation_server, settings
):
    client.force_login(annotator)
    arena_url = reverse("annotate:arena", args=[campaign.pk])

    sent = client.post(arena_url, {"text": "A plain form post?"})
    assert sent.status_code == 302 and sent["Location"] == arena_url
    page = client.get(arena_url).content.decode()
    assert '<header class="top">' in page and "reload the page" in page  # whole, with a way to see them

    answered(ArenaTurn.objects.get())
    voted = client.post(reverse("annotate:arena-vote", args=[ArenaTurn.objects.get().pk]), {"answer": "left"})
    assert voted.status_code == 302 and "Your vote" in client.get(arena_url).content.decode()
    again = client.post(reverse("annotate:arena-vote", args=[ArenaTurn.objects.get().pk]), {"answer": "left"})
    assert again.status_code == 409 and '<header class="top">' in again.content.decode()  # a whole page


@pytest.mark.django_db(transaction=True)
def test_a_stream_that_joins_the_watch_during_a_read_waits_for_its_own_row(campaign, annotator):
    import asyncio

    from annotate import turn_watch

    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="hello")
    watch = turn_watch.TurnWatch()
    real_rows = turn_watch._rows

    def slow_rows(ids):
        time.sleep(0.2)
        return real_rows(ids)

    async def scene():
        first = watch.rows(-1)  # another stream's turn, read first
        pending = asyncio.ensure_future(first.__anext__())
        await asyncio.sleep(0.05)  # the read for [-1] is under way
        joined = watch.rows(turn.pk)
        row = await joined.__anext__()
        await pending
        await first.aclose()
        await joined.aclose()
        return row

    turn_watch._rows = slow_rows
    try:
        row = asyncio.run(scene())
    finally:
        turn_watch._rows = real_rows

    assert row is not None and row["id"] == turn.pk  # never None for a turn that exists


@pytest.mark.django_db(transaction=True)
def test_a_failed_read_of_the_turns_does_not_leave_their_streams_waiting_for_ever(campaign, annotator):
    """The watch's one reader outlives a read that fails (the database away a moment): the streams
    get the next read (a reader that died left every stream of its process waiting for good)."""
    import asyncio

    from annotate import turn_watch

    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="hello")
    real_rows, calls = turn_watch._rows, []

    def failing_once(ids):
        calls.append(ids)
        if len(calls) == 1:
            raise RuntimeError("database is locked")
        return real_rows(ids)

    async def scene():
        rows = turn_watch.TurnWatch().rows(turn.pk)
        try:
            return await asyncio.wait_for(rows.__anext__(), timeout=10)
        finally:
            await rows.aclose()

    turn_watch._rows = failing_once
    try:
        row = asyncio.run(scene())
    finally:
        turn_watch._rows = real_rows

    assert len(calls) == 2 and row is not None and row["id"] == turn.pk


@pytest.mark.django_db
def test_two_identical_answers_take_only_a_tie_or_both_bad_and_never_reach_training_as_a_pair(
    client, campaign, annotator
):
    """One policy sampled twice often says the same short thing: a left or right vote on it is
    refused with the reason (it made a round's data refuse to train), tie and both bad go on; and a
    pair of identical texts from anywhere is left out of the preference export."""
    client.force_login(annotator)
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="Say hi.")
    ArenaTurn.objects.filter(pk=turn.pk).update(
        status=TurnStatus.ANSWERED, text_a="Hi!", text_b="Hi! ", finish_a="stop", finish_b="stop"
    )
    turn.refresh_from_db()

    page = client.get(reverse("annotate:arena", args=[campaign.pk])).content.decode()
    assert 'id="arena-identical">Both answers are the same text' in page
    assert 'value="left"' not in page and 'value="right:clear"' not in page and 'value="tie"' in page
    with pytest.raises(TurnChanged, match="both answers are the same text"):
        arena.turn_vote(turn=turn, annotator=annotator, verdict="left")
    judgment = arena.turn_vote(turn=turn, annotator=annotator, verdict="tie")
    assert judgment.choice == "tie"

    pair = ComparisonFactory(response_a__text="Same.", response_b__text="Same.")
    JudgmentFactory(comparison=pair, choice="first")
    report = ExportReport()
    assert list(preference_rows(report=report, include_ties=True)) == []  # not even as a tie
    assert report.excluded["identical answers"] == 2  # the arena's tie and the pair


@pytest.mark.django_db
def test_a_new_conversation_asked_while_answers_are_written_shows_those_answers(client, campaign, annotator):
    """A reload of ``?new=1`` (or ``?example=1``) mid-stream: the running pair and why no new
    conversation (it showed an empty form while the pair went on out of sight)."""
    client.force_login(annotator)
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="hello")
    for ask in ("?new=1", "?example=1"):
        page = client.get(reverse("annotate:arena", args=[campaign.pk]) + ask).content.decode()
        assert f'sse-connect="/annotate/arena/turns/{turn.pk}/stream/"' in page, ask
        assert "These answers are still being written: a new conversation can start once" in page
    ArenaTurn.objects.filter(pk=turn.pk).update(status=TurnStatus.FAILED, error="x")
    fresh = client.get(reverse("annotate:arena", args=[campaign.pk]) + "?new=1").content.decode()
    assert 'id="arena-send"' in fresh and "sse-connect" not in fresh
