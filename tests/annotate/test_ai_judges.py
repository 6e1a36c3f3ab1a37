"""AI judges against a stand-in OpenAI-compatible server (the real engine's test is marked vllm):
both orders read, one verdict per pair stored beside people's judgments and never among them, errors
that say what went wrong, a rerun that judges what is left, agreement read off the database."""

import io
import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from django.core.management import CommandError, call_command

from annotate.errors import JudgeFailed
from annotate.models import AIVerdict, Judgment
from annotate.selectors import ExportReport, preference_rows
from annotate.services.ai_judges import judge_agreement_with_people, judge_campaign, judge_register
from config.errors import Invalid
from tests.factories import (
    CampaignFactory,
    ComparisonFactory,
    JudgmentFactory,
    PromptFactory,
    ResponseFactory,
    UserFactory,
)


class Judge(BaseHTTPRequestHandler):
    """Prefers the answer that says "good" (p 0.9), as a chat completion of one token with its top
    log-probs; ``mode`` makes it biased to A, text-only, unhelpful, or failing."""

    mode = "fair"
    asked: list[dict] = []

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body["authorization"] = self.headers.get("Authorization", "")
        Judge.asked.append(body)
        if Judge.mode == "broken":
            self._send(500, {"error": "engine down"})
            return
        text = body["messages"][0]["content"]
        a = text.split("Answer A:")[1].split("Answer B:")[0]
        p_a = 0.8 if Judge.mode == "biased" else 0.9 if "good" in a else 0.1
        letter = "A" if p_a >= 0.5 else "B"
        choice = {"index": 0, "message": {"role": "assistant", "content": letter}, "finish_reason": "length"}
        if Judge.mode == "chatty" or (Judge.mode == "chatty on odd" and "odd" in text):
            choice["message"]["content"] = "Sure, here is my view"
        elif Judge.mode != "text":
            top = [{"token": "A", "logprob": math.log(p_a)}, {"token": "B", "logprob": math.log(1 - p_a)}]
            choice["logprobs"] = {"content": [{"token": letter, "logprob": 0.0, "top_logprobs": top}]}
        self._send(200, {"object": "chat.completion", "choices": [choice]})

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def endpoint():
    Judge.mode, Judge.asked = "fair", []
    server = ThreadingHTTPServer(("127.0.0.1", 0), Judge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def pair(campaign, first, second, *people):
    prompt = PromptFactory()
    comparison = ComparisonFactory(
        campaign=campaign,
        prompt=prompt,
        response_a=ResponseFactory(prompt=prompt, text=first),
        response_b=ResponseFactory(prompt=prompt, text=second),
    )
    for choice in people:
        JudgmentFactory(comparison=comparison, annotator=UserFactory(), choice=choice)
    return comparison


@pytest.mark.django_db
def test_a_judge_reads_each_pair_in_both_orders_and_its_verdicts_never_count_as_peoples(endpoint):
    campaign = CampaignFactory(name="pairs", guidelines="Prefer answers that are good.")
    pairs = [
        pair(campaign, "a good answer", "a poor one", "first", "first"),
        pair(campaign, "meh", "really good", "second"),
        pair(campaign, "good too", "poor", "second", "second", "first"),  # people disagree with the judge
    ]
    judge = judge_register(name="stronger", url=endpoint + "/v1", model="big-model")
    people_before = Judgment.objects.count()
    rows_before = len(list(preference_rows(report=ExportReport())))

    assert judge_campaign(judge=judge, campaign=campaign) == 3

    verdicts = {v.comparison_id: v for v in AIVerdict.objects.all()}
    assert [verdicts[p.pk].choice for p in pairs] == ["first", "second", "first"]
    assert all(v.consistent for v in verdicts.values())
    assert verdicts[pairs[0].pk].probability_first == pytest.approx(0.9)
    assert len(Judge.asked) == 6  # two readings a pair: the answers swapped in the second
    first_reading, second_reading = (a["messages"][0]["content"] for a in Judge.asked[:2])
    assert first_reading.index("a good answer") < first_reading.index("a poor one")
    assert second_reading.index("a poor one") < second_reading.index("a good answer")
    assert "Prefer answers that are good." in first_reading  # the campaign's guidelines
    assert {a["max_tokens"] for a in Judge.asked} == {1} and Judge.asked[0]["top_logprobs"] == 5
    assert Judgment.objects.count() == people_before  # stored beside people's, never among them
    assert len(list(preference_rows(report=ExportReport()))) == rows_before

    agreement = judge_agreement_with_people(judge=judge, campaign=campaign, resamples=100)
    # people: first, second, second; the judge: first, second, first -> observed 2/3; chance: people
    # first 1/3, judge first 2/3: 1/3*2/3 + 2/3*1/3 = 4/9; kappa = (2/3 - 4/9) / (5/9) = 0.4
    assert agreement.compared == 3 and agreement.kappa == pytest.approx(0.4)
    assert agreement.consistency == 1.0 and agreement.confusion[1][:2] == [1, 1]


@pytest.mark.django_db
def test_a_rerun_judges_what_is_left_and_an_error_keeps_what_was_judged(endpoint):
    campaign = CampaignFactory(name="pairs")
    for i in range(3):
        pair(campaign, f"good {i}", f"poor {i}", "first")
    judge = judge_register(name="j", url=endpoint, model="m")

    assert judge_campaign(judge=judge, campaign=campaign, limit=1) == 1
    Judge.mode = "broken"
    with pytest.raises(JudgeFailed, match=r"/v1/chat/completions answered 500: .*engine down"):
        judge_campaign(judge=judge, campaign=campaign)
    assert AIVerdict.objects.count() == 1  # what was judged is kept
    Judge.mode = "fair"
    assert judge_campaign(judge=judge, campaign=campaign) == 2 and AIVerdict.objects.count() == 3
    assert judge_campaign(judge=judge, campaign=campaign) == 0  # nothing left


@pytest.mark.django_db
def test_a_judge_biased_to_the_first_position_is_inconsistent_and_unsure(endpoint):
    campaign = CampaignFactory(name="pairs")
    pair(campaign, "good", "poor", "first")
    judge = judge_register(name="biased", url=endpoint, model="m")
    Judge.mode = "biased"  # "A" at 0.8 whatever it reads

    judge_campaign(judge=judge, campaign=campaign)

    verdict = AIVerdict.objects.get()
    assert not verdict.consistent and verdict.probability_first == pytest.approx(0.5)
    assert [r["probability_shown_first"] for r in verdict.readings] == [pytest.approx(0.8)] * 2


@pytest.mark.django_db
def test_an_endpoint_without_log_probs_is_read_from_its_text_and_a_stray_answer_is_named(endpoint):
    campaign = CampaignFactory(name="pairs")
    pair(campaign, "good", "poor", "first")
    judge = judge_register(name="plain", url=endpoint, model="m")
    Judge.mode = "chatty"
    with pytest.raises(JudgeFailed, match="the judge answered 'Sure, here is my view', not A or B"):
        judge_campaign(judge=judge, campaign=campaign)
    Judge.mode = "text"
    judge_campaign(judge=judge, campaign=campaign)
    assert AIVerdict.objects.get().probability_first == 1.0


@pytest.mark.django_db
def test_unreachable_endpoints_keys_and_bad_registrations_say_what_is_wrong(endpoint, monkeypatch):
    campaign = CampaignFactory(name="pairs")
    pair(campaign, "good", "poor", "first")
    gone = judge_register(name="gone", url="http://127.0.0.1:9", model="m")
    with pytest.raises(JudgeFailed, match=r"http://127.0.0.1:9/v1/chat/completions could not be reached"):
        judge_campaign(judge=gone, campaign=campaign)

    keyed = judge_register(name="keyed", url=endpoint, model="m", api_key_env="JUDGE_KEY")
    monkeypatch.delenv("JUDGE_KEY", raising=False)
    with pytest.raises(
        JudgeFailed, match="the environment variable JUDGE_KEY holding keyed's key is not set"
    ):
        judge_campaign(judge=keyed, campaign=campaign)
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    judge_campaign(judge=keyed, campaign=campaign)
    assert Judge.asked[-1]["authorization"] == "Bearer sk-test"
    assert "sk-test" not in str(list(keyed.__class__.objects.values()))  # the key is not stored

    with pytest.raises(Invalid, match="name the model"):
        judge_register(name="x", url=endpoint)
    with pytest.raises(Invalid, match="one endpoint"):
        judge_register(name="x")
    with pytest.raises(Invalid, match=r"must hold \{first\}, \{second\}"):
        judge_register(name="x", url=endpoint, model="m", rubric="Judge {prompt}")
    with pytest.raises(Invalid, match="exists already"):
        judge_register(name="gone", url=endpoint, model="m")
    with pytest.raises(Invalid, match="an AI judge judges pairs"):
        judge_campaign(judge=keyed, campaign=CampaignFactory(name="t", task="thumbs"))


@pytest.mark.django_db
def test_the_commands_register_a_judge_run_it_and_print_its_agreement(endpoint):
    campaign = CampaignFactory(name="pairs")
    pair(campaign, "good", "poor", "first")
    pair(campaign, "poor", "good", "second", "second")
    out = io.StringIO()
    call_command("register_judge", "cmd", url=endpoint, model="m", stdout=out)
    call_command("judge_campaign", judge="cmd", campaign="pairs", stdout=out)
    text = out.getvalue()
    assert "AI judge 'cmd' registered" in text and "judged 2 of 2 pairs" in text
    assert "against the people's majority on 2 pairs: kappa 1.00" in text
    assert "consistent in both orders 100%" in text
    with pytest.raises(CommandError, match="no AI judge named 'nobody'"):
        call_command("judge_campaign", judge="nobody", campaign="pairs", stdout=out)
    call_command(
        "register_judge", "cmd", url=endpoint, model="m", exist_ok=True, stdout=out
    )  # make demo again
    assert "AI judge 'cmd' is registered already" in out.getvalue()
    with pytest.raises(CommandError, match="exists already"):
        call_command("register_judge", "cmd", url=endpoint, model="m", stdout=out)


@pytest.mark.django_db
def test_staff_run_a_judge_from_the_campaign_page_and_see_its_agreement_there(client, staff, endpoint):
    """The campaign page lists the judges with their agreement here; its button enqueues a background
    run, which the worker executes with progress, and the page polls until the run has ended."""
    from django.urls import reverse
    from django_tasks_db.models import DBTaskResult

    from annotate.models import JudgeRun
    from annotate.tasks import judge_run_task

    campaign = CampaignFactory(name="pairs")
    pair(campaign, "good", "poor", "first", "first")
    pair(campaign, "poor", "good", "second")
    judge = judge_register(name="stronger", url=endpoint, model="m")
    client.force_login(staff)
    page = client.get(reverse("annotate:campaign", args=[campaign.pk])).content.decode()
    assert "AI judges" in page and "stronger" in page and "Judge this campaign's pairs" in page

    started = client.post(reverse("annotate:campaign-judge", args=[campaign.pk]), {"judge": judge.pk})
    assert started.status_code == 302 and started.url.endswith("#judges")
    run = JudgeRun.objects.get()
    task = DBTaskResult.objects.get()
    assert task.task_path == "annotate.tasks.judge_run_task" and task.args_kwargs["kwargs"] == {
        "run_id": run.pk
    }
    live = client.get(reverse("annotate:campaign-judges", args=[campaign.pk]))
    assert live.status_code == 200 and 'hx-trigger="every 2s"' in live.content.decode()  # polled while queued
    again = client.post(reverse("annotate:campaign-judge", args=[campaign.pk]), {"judge": judge.pk})
    assert again.status_code == 409 and "already judging" in again.content.decode()

    assert judge_run_task.func(run_id=run.pk) == "succeeded"  # what db_worker does
    run.refresh_from_db()
    assert (run.done, run.total) == (2, 2) and run.finished_at is not None
    settled = client.get(reverse("annotate:campaign-judges", args=[campaign.pk]))
    text = " ".join(settled.content.decode().split())
    assert settled.status_code == 286 and "every 2s" not in text  # the polling stops
    assert "<td>stronger</td> <td>2</td> <td>2</td> <td>1.00" in text and "succeeded" in text


@pytest.mark.django_db
def test_a_run_that_fails_says_why_on_the_page_and_keeps_what_was_judged(client, staff, endpoint):
    from django.urls import reverse

    from annotate.models import JudgeRun
    from annotate.services.ai_judges import judge_run_execute, judge_run_start

    campaign = CampaignFactory(name="pairs")
    pair(campaign, "good", "poor", "first")
    judge = judge_register(name="gone", url="http://127.0.0.1:9", model="m")
    run = judge_run_start(judge=judge, campaign=campaign)
    assert judge_run_execute(run.pk) == "failed"
    run.refresh_from_db()
    assert "could not be reached" in run.error and run.finished_at is not None
    client.force_login(staff)
    page = client.get(reverse("annotate:campaign", args=[campaign.pk])).content.decode()
    assert "http://127.0.0.1:9/v1/chat/completions could not be reached" in page
    judge_run_start(judge=judge, campaign=campaign)  # a failed run does not block the next
    assert JudgeRun.objects.count() == 2


@pytest.mark.django_db
def test_the_api_lists_judges_with_their_agreement_in_a_campaign(api, staff, endpoint):
    campaign = CampaignFactory(name="pairs")
    pair(campaign, "good", "poor", "first")
    pair(campaign, "poor", "good", "second")
    judge = judge_register(name="stronger", url=endpoint, model="m")
    judge_campaign(judge=judge, campaign=campaign)
    api.force_authenticate(staff)

    [row] = api.get("/api/judges/", {"campaign": "pairs"}).json()

    assert row["name"] == "stronger" and row["url"] == endpoint and row["verdicts"] == 2
    assert row["agreement"]["kappa"] == 1.0 and row["agreement"]["compared"] == 2
    assert row["agreement"]["consistency"] == 1.0 and row["agreement"]["labels"][:2] == ["first", "second"]
    assert api.get("/api/judges/", {"campaign": "nope"}).json()["error"] == "campaign_not_found"
    exported = api.get("/api/export/", {"campaign": "pairs", "ai_judge": "stronger"})
    rows = [json.loads(line) for line in b"".join(exported.streaming_content).decode().splitlines()]
    assert [r["ai_votes"] for r in rows] == [1, 1]
    assert api.get("/api/export/", {"ai_judge": "nobody"}).status_code == 404


@pytest.mark.django_db
def test_routing_lowers_the_overlap_only_of_pairs_the_judge_read_surely_and_the_same_both_ways(client, staff):
    """Hand-set verdicts: sure and consistent (lowered by one), sure but inconsistent, unsure, gold,
    and one already judged by as many people as the lowered overlap asks; a second route changes
    nothing."""
    from django.urls import reverse

    from annotate.models import Comparison, Kind
    from annotate.services.ai_judges import judge_route

    campaign = CampaignFactory(name="pairs", overlap=3)
    judge = judge_register(name="j", url="http://127.0.0.1:9", model="m")
    cases = {  # (probability_first, consistent, kind, people already judged)
        "sure": (0.9, True, Kind.TRAIN, 0),
        "sure second": (0.1, True, Kind.TRAIN, 1),
        "inconsistent": (0.9, False, Kind.TRAIN, 0),
        "unsure": (0.7, True, Kind.TRAIN, 0),
        "gold": (0.95, True, Kind.GOLD, 0),
        "judged": (0.9, True, Kind.TRAIN, 3),
    }
    made = {}
    for name, (p, consistent, kind, people) in cases.items():
        comparison = pair(campaign, f"{name} a", f"{name} b", *["first"] * people)
        Comparison.objects.filter(pk=comparison.pk).update(
            overlap=3,
            kind=kind,
            gold_answer="first" if kind == Kind.GOLD else "",
            judgment_count=people,
            needs_judgments=people < 3 or kind == Kind.GOLD,
        )
        AIVerdict.objects.create(
            judge=judge,
            comparison=comparison,
            choice="first" if p >= 0.5 else "second",
            probability_first=p,
            consistent=consistent,
        )
        made[name] = comparison.pk

    report = judge_route(judge=judge, campaign=campaign)

    overlaps = {name: Comparison.objects.get(pk=pk).overlap for name, pk in made.items()}
    assert overlaps == {"sure": 2, "sure second": 2, "inconsistent": 3, "unsure": 3, "gold": 3, "judged": 3}
    assert (report.lowered, report.kept, report.judgments_saved) == (2, 2, 2)
    assert Comparison.objects.get(pk=made["sure"]).routed_by == judge
    assert judge_route(judge=judge, campaign=campaign).lowered == 0  # once per judge and campaign
    # people first where it was unsure: the oldest such pair is served before older sure ones
    from annotate.services.queue import comparison_assign_next

    campaign.refresh_from_db()
    campaign.gold_rate = 0.0
    campaign.save()
    newcomer = UserFactory()
    served = [comparison_assign_next(annotator=newcomer).comparison_id]
    assert served == [made["inconsistent"]] and campaign.people_first
    client.force_login(staff)
    page = client.post(
        reverse("annotate:campaign-route", args=[campaign.pk]), {"judge": judge.pk}, follow=True
    )
    assert "j: 0 pairs need one person fewer" in page.content.decode()
    with pytest.raises(Invalid, match=r"confidence must be above 0\.5"):
        judge_route(judge=judge, campaign=campaign, confidence=0.5)


@pytest.mark.django_db
def test_exports_take_an_ai_judges_verdicts_only_when_asked_and_the_card_counts_them(tmp_path):
    """Without the option no AI verdict reaches an export; with it, each is one vote (a pair only the
    judge read is exported from it; a 1-1 split has no majority), rows carry ai_votes, the report and
    the data card count each judge's verdicts; under Dawid-Skene the judge is fitted as an annotator."""
    from annotate.selectors import comparisons_reliability, export_comparisons

    campaign = CampaignFactory(name="pairs")
    split = pair(campaign, "a1", "b1", "first")
    alone = pair(campaign, "a2", "b2")
    agreed = pair(campaign, "a3", "b3", "first", "first")
    judge = judge_register(name="j", url="http://127.0.0.1:9", model="m")
    for comparison, choice in ((split, "second"), (alone, "first"), (agreed, "first")):
        AIVerdict.objects.create(
            judge=judge, comparison=comparison, choice=choice, probability_first=0.9, consistent=True
        )

    people = list(preference_rows(report=ExportReport(), campaign=campaign))
    assert [r["comparison_id"] for r in people] == [split.pk, agreed.pk] and "ai_votes" not in people[0]

    report = ExportReport()
    both = list(preference_rows(report=report, campaign=campaign, ai_judges=[judge]))
    assert [(r["comparison_id"], r["ai_votes"], r["judgments"]) for r in both] == [
        (alone.pk, 1, 1),
        (agreed.pk, 1, 3),
    ]
    assert report.excluded["no majority"] == 1 and report.judge_votes == {"j": 2}
    fitted = comparisons_reliability(
        comparisons=export_comparisons(campaign=campaign, split="train", kinds=("train", "gold")),
        ai_votes={split.pk: [(judge.pk, "second")], agreed.pk: [(judge.pk, "first")]},
    )
    assert -judge.pk in fitted.annotators  # the judge, an annotator of its own

    out = tmp_path / "prefs.jsonl"
    call_command("export_preferences", out=str(out), campaign="pairs", ai_judge=["j"], stdout=io.StringIO())
    card = (tmp_path / "README.md").read_text()
    assert "AI judges' verdicts among the votes (asked for; rows carry `ai_votes`): j: 2" in card
    assert '--ai-judge "j"' in card  # what wrote it, with the option
    with pytest.raises(CommandError, match="no AI judge named 'nobody'"):
        call_command("export_preferences", out=str(out), ai_judge=["nobody"], stdout=io.StringIO())


@pytest.mark.django_db
def test_a_round_counts_an_ai_judges_verdicts_only_when_asked_from_the_command_the_api_and_its_data(
    api, client, staff, tmp_path, settings
):
    """Three pairs people judged and five only the judge read: a round of people's alone is refused
    (3 < 8); asked with the judge it has 8, keeps the judge (a retry asks again), and its data holds
    the judge's rows with ai_votes and a card that counts them."""
    from annotate.models import AIVerdict
    from tests.factories import PolicyFactory, judged_pairs
    from training.models import TrainingRound
    from training.round_training import _export
    from training.rounds import RoundRequest, round_create

    policy = PolicyFactory(name="smol")
    judged_pairs(policy, 3)
    judge = judge_register(name="j", url="http://127.0.0.1:9", model="m")
    for _ in range(5):
        prompt = PromptFactory()
        comparison = ComparisonFactory(
            prompt=prompt,
            response_a=ResponseFactory(prompt=prompt, policy=policy),
            response_b=ResponseFactory(prompt=prompt, policy=policy),
        )
        AIVerdict.objects.create(
            judge=judge, comparison=comparison, choice="second", probability_first=0.1, consistent=True
        )

    with pytest.raises(CommandError, match="has 3 preference pairs"):
        call_command("train_round", policy="smol", enqueue=True, stdout=io.StringIO())
    call_command("train_round", policy="smol", enqueue=True, ai_judge=["j"], stdout=io.StringIO())
    queued = TrainingRound.objects.get()
    assert list(queued.ai_judges.all()) == [judge] and RoundRequest.of(queued).ai_judges == (judge,)
    api.force_authenticate(staff)
    started = api.post("/api/rounds/", {"policy": "smol", "ai_judges": ["j"]}, format="json")
    assert started.status_code == 201 and started.json()["ai_judges"] == ["j"]

    path, count, _, _, card = _export(queued, tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert count == 8 and sum(r["ai_votes"] for r in rows) == 5
    assert "AI judges' verdicts among the votes (asked for; rows carry `ai_votes`): j: 5" in card
    people_only = round_create(request=RoundRequest(policy=policy, min_pairs=1))
    assert list(people_only.ai_judges.all()) == []
    from django.urls import reverse

    client.force_login(staff)
    page = " ".join(client.get(reverse("training:round", args=[queued.pk])).content.decode().split())
    assert "majority vote; with the verdicts of AI judge <strong>j</strong> (one vote each" in page
    plain = client.get(reverse("training:round", args=[people_only.pk])).content.decode()
    assert "people&#x27;s judgments only" in plain or "people's judgments only" in plain


@pytest.mark.django_db
def test_suggestions_go_to_half_the_annotators_and_the_campaign_page_shows_their_pull(client, staff):
    """Off by default; on, one fixed half of the annotators see the judge's verdict in screen terms
    (its lease marked), the other half do not, and the campaign page compares their agreement."""
    from django.urls import reverse

    from annotate.models import Assignment, Comparison
    from annotate.services.ai_judges import sees_suggestions

    campaign = CampaignFactory(name="pairs", overlap=2, gold_rate=0.0)
    comparison = pair(campaign, "good", "poor")
    Comparison.objects.filter(pk=comparison.pk).update(overlap=2)  # both people judge it
    judge = judge_register(name="stronger", url="http://127.0.0.1:9", model="m")
    AIVerdict.objects.create(
        judge=judge, comparison=comparison, choice="first", probability_first=0.9, consistent=True
    )
    people = [UserFactory() for _ in range(12)]
    shown = next(p for p in people if sees_suggestions(campaign, p.pk))
    hidden = next(p for p in people if not sees_suggestions(campaign, p.pk))

    client.force_login(shown)
    assert 'id="suggestion"' not in client.get(reverse("annotate:queue")).content.decode()  # off by default
    Assignment.objects.all().delete()
    campaign.suggest_judge = judge
    campaign.save()
    page = client.get(reverse("annotate:queue")).content.decode()
    lease = Assignment.objects.get(annotator=shown)
    side = "Left" if lease.left == "first" else "Right"
    assert (
        f"AI judge <strong>stronger</strong> suggests: <strong>{side}</strong> is better (90% sure)" in page
    )
    assert lease.suggested
    client.post(reverse("annotate:judge"), {"comparison": comparison.pk, "answer": side.lower()})

    client.force_login(hidden)
    page = client.get(reverse("annotate:queue")).content.decode()
    lease = Assignment.objects.get(annotator=hidden)
    assert 'id="suggestion"' not in page and not lease.suggested
    other = "right" if lease.left == "first" else "left"  # the answer the judge did not prefer
    client.post(reverse("annotate:judge"), {"comparison": comparison.pk, "answer": other})

    client.force_login(staff)
    text = " ".join(client.get(reverse("annotate:campaign", args=[campaign.pk])).content.decode().split())
    assert (
        "those who saw them agreed with it on 100% of 1 decisive verdicts; those who did not, on 0% of 1"
        in text
    )


@pytest.mark.django_db
def test_staff_register_a_judge_from_the_campaign_page_and_bad_input_says_why(client, staff):
    from django.urls import reverse

    from annotate.models import AIJudge
    from tests.factories import PolicyFactory

    campaign = CampaignFactory(name="pairs")
    policy = PolicyFactory(name="smol")
    client.force_login(staff)
    page = client.get(reverse("annotate:campaign", args=[campaign.pk])).content.decode()
    assert "Register an AI judge" in page and "No AI judge is registered yet" in page
    new = reverse("annotate:judge-new", args=[campaign.pk])

    done = client.post(new, {"name": "house judge", "policy": policy.pk}, follow=True)
    assert "AI judge house judge registered" in done.content.decode()
    assert AIJudge.objects.get(name="house judge").policy == policy
    bad = client.post(new, {"name": "api judge", "url": "https://api.example.com/v1"})
    assert (
        bad.status_code == 400
        and "name the model the URL https://api.example.com/v1 serves" in bad.content.decode()
    )
    assert not AIJudge.objects.filter(name="api judge").exists()


@pytest.mark.django_db
def test_a_pair_the_judge_gives_no_verdict_on_is_skipped_and_the_run_goes_on(endpoint):
    """One pair the judge answers neither A nor B: skipped, left unjudged and counted, the rest judged
    (one such pair stopped every run at it for good); a rerun tries it again."""
    from annotate.models import JudgeRun
    from annotate.services.ai_judges import judge_run_execute, judge_run_start

    campaign = CampaignFactory(name="pairs")
    pair(campaign, "good 1", "poor 1", "first")
    odd = pair(campaign, "odd good", "odd poor", "first")
    pair(campaign, "poor 3", "good 3", "second")
    judge = judge_register(name="j", url=endpoint, model="m")
    Judge.mode = "chatty on odd"

    run = judge_run_start(judge=judge, campaign=campaign)
    assert judge_run_execute(run.pk) == "succeeded"
    run = JudgeRun.objects.get(pk=run.pk)
    assert (run.done, run.total, run.skipped) == (3, 3, 1)
    assert AIVerdict.objects.count() == 2 and not AIVerdict.objects.filter(comparison=odd).exists()
    Judge.mode = "fair"
    assert judge_campaign(judge=judge, campaign=campaign) == 1  # the skipped pair, tried again
