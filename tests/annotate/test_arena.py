"""The arena: live answers from two hidden policies, voted turn by turn, stored as comparisons."""

import json
import random

import pytest
from django.urls import reverse

from annotate.errors import ArenaBusy
from annotate.models import ArenaConversation, ArenaTurn, Choice, Side, Task, TurnStatus
from annotate.selectors import ExportReport, preference_rows
from annotate.services import arena
from annotate.services.campaigns import campaign_arena_pool_set, campaign_create
from config.errors import Invalid
from generation.models import FinishReason, Prompt
from tests.factories import PolicyFactory
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
    assert arena.turn_claim(turn=turn)
    updates = list(arena.turn_generate(turn=turn))
    turn.refresh_from_db()
    return updates


@pytest.mark.django_db
def test_a_turn_streams_both_answers_then_the_vote_becomes_a_comparison(
    campaign, annotator, generation_server, pool
):
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="What is a haiku?")

    updates = answered(turn)

    assert updates and all(isinstance(a, str) and isinstance(b, str) for a, b in updates)
    assert turn.status == TurnStatus.ANSWERED and turn.text_a and turn.text_b
    assert {turn.finish_a, turn.finish_b} <= {"stop", "length"}
    assert (updates[-1][0], updates[-1][1]) == (turn.text_a, turn.text_b)
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
    with pytest.raises(Invalid, match="vote on the last answers"):
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
        )
    assert len(set(met[:3])) == 3 and len(set(met[3:])) == 3  # every pair once, then every pair twice


@pytest.mark.django_db
def test_a_pool_of_one_and_a_held_back_policy_are_refused_clearly(campaign, pool, annotator):
    pool[1].held_back = True
    pool[1].save()
    with pytest.raises(Invalid, match="needs at least two policies"):
        arena.conversation_start(campaign=campaign, annotator=annotator, text="hi")


@pytest.mark.django_db
def test_limits_one_pair_at_a_time_turns_per_minute_and_turns_per_conversation(
    campaign, annotator, generation_server, settings
):
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="one")
    arena.turn_claim(turn=turn)  # being written
    with pytest.raises(ArenaBusy, match="still being written"):
        arena.conversation_start(campaign=campaign, annotator=annotator, text="two")
    ArenaTurn.objects.filter(pk=turn.pk).update(status=TurnStatus.ANSWERED)
    settings.PREFLOOP_ARENA_TURNS_PER_MINUTE = 1
    with pytest.raises(ArenaBusy, match="turns in the last minute"):
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
    assert "the left answer: no answer from the server at http://127.0.0.1:9" in turn.error
    with pytest.raises(Invalid, match="wait for both answers"):
        arena.turn_vote(turn=turn, annotator=annotator, verdict="left")
    again = arena.turn_regenerate(turn=turn)
    assert again.status == TurnStatus.GENERATING and again.messages == turn.messages and not again.error


@pytest.mark.django_db
def test_a_stop_keeps_what_was_written_marked_cut_off(campaign, annotator, generation_server, settings):
    settings.PREFLOOP_ARENA_MAX_NEW_TOKENS = 4096  # far longer than the test waits
    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="write a long story")
    for _ in range(8):  # the tiny random model sometimes ends both answers itself before the stop lands
        assert arena.turn_claim(turn=turn)
        stream = arena.turn_generate(turn=turn)
        next(stream)  # the first words are in
        arena.turn_stop(turn=turn)
        list(stream)
        turn.refresh_from_db()
        assert turn.status == TurnStatus.ANSWERED
        if "cancelled" in {turn.finish_a, turn.finish_b}:
            break
        turn = arena.turn_regenerate(turn=turn)
    assert "cancelled" in {turn.finish_a, turn.finish_b}
    assert turn.text_a or turn.text_b  # what was written before the stop is kept
    arena.turn_vote(turn=turn, annotator=annotator, verdict="both_bad")
    stopped = [r for r in (turn.comparison.response_a, turn.comparison.response_b) if r.finish_reason]
    assert FinishReason.LENGTH in {r.finish_reason for r in stopped}  # exported and shown as cut off


@pytest.mark.django_db
def test_the_page_streams_escaped_text_then_the_vote_and_reveals_the_names(
    client, campaign, annotator, other_annotator, generation_server
):
    client.force_login(annotator)
    page = client.post(reverse("annotate:arena", args=[campaign.pk]), {"text": "<script>alert(1)</script>"})
    turn = ArenaTurn.objects.get()
    assert (
        page.status_code == 200
        and f'sse-connect="/annotate/arena/turns/{turn.pk}/stream/"' in page.content.decode()
    )
    assert "<script>alert(1)</script>" not in page.content.decode()

    stream = client.get(reverse("annotate:arena-stream", args=[turn.pk]))
    body = b"".join(stream.streaming_content).decode()

    assert stream["Content-Type"] == "text/event-stream"
    assert (
        "event: left\n" in body
        and "event: right\n" in body
        and body.rstrip().split("\n\n")[-1].startswith("event: done")
    )
    assert 'id="judge"' in body.split("event: done")[1]  # the vote buttons come with the end
    turn.refresh_from_db()
    assert turn.status == TurnStatus.ANSWERED

    again = b"".join(client.get(reverse("annotate:arena-stream", args=[turn.pk])).streaming_content).decode()
    assert again.count("event: done") == 1 and "event: left" not in again  # a finished turn: done at once

    voted = client.post(reverse("annotate:arena-vote", args=[turn.pk]), {"answer": "left"}).content.decode()
    assert "Left was" in voted and turn.conversation.policy_a.name in voted

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
    assert 'id="arena"' in html and "turns in the last minute" in html and "my careful question" in html


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
    arena.turn_vote(turn=first, annotator=annotator, verdict="left")
    second = arena.turn_continue(
        conversation=first.conversation, annotator=annotator, text="And a vegetable?"
    )
    answered(second)
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
def test_a_turn_whose_stream_died_is_shown_failed_and_can_be_regenerated(
    client, campaign, annotator, settings
):
    from datetime import timedelta

    from django.utils import timezone

    turn = arena.conversation_start(campaign=campaign, annotator=annotator, text="hello")
    assert arena.turn_claim(turn=turn)  # a stream took it, then its process died
    ArenaTurn.objects.filter(pk=turn.pk).update(
        claimed_at=timezone.now() - timedelta(seconds=arena.STREAM_LIFE * settings.PREFLOOP_ARENA_TIMEOUT + 1)
    )
    client.force_login(annotator)

    body = b"".join(client.get(reverse("annotate:arena-stream", args=[turn.pk])).streaming_content).decode()

    assert "event: done" in body and "stream writing these answers stopped" in body  # no endless wait
    turn.refresh_from_db()
    assert turn.status == TurnStatus.FAILED
    assert arena.turn_regenerate(turn=turn).status == TurnStatus.GENERATING
