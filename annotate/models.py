from __future__ import annotations

from functools import cached_property
from typing import Any

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from generation.models import Prompt, Response


class Choice(models.TextChoices):
    FIRST = "first", "first is better"
    SECOND = "second", "second is better"
    TIE = "tie", "tie"
    BOTH_BAD = "both_bad", "both bad"
    GOOD = "good", "good"  # thumbs: the one answer is good
    BAD = "bad", "bad"  # thumbs: it is not


class Verdict(models.TextChoices):
    """What the annotator pressed, in screen terms; a Choice once mapped through the side shown left."""

    LEFT = "left", "left is better"
    RIGHT = "right", "right is better"
    TIE = "tie", "tie"
    BOTH_BAD = "both_bad", "both bad"
    GOOD = "good", "good"
    BAD = "bad", "bad"


PAIR_VERDICTS = (Verdict.LEFT, Verdict.RIGHT, Verdict.TIE, Verdict.BOTH_BAD)
THUMBS_VERDICTS = (Verdict.GOOD, Verdict.BAD)


class Task(models.TextChoices):
    """What a campaign's annotators are asked."""

    PAIRS = "pairs", "pairs: which of two answers is better"
    THUMBS = "thumbs", "thumbs: is one answer good or bad"
    RANKINGS = "rankings", "rankings: order three or four answers, best first"
    ARENA = "arena", "arena: write a prompt, two hidden policies answer live, vote"


class Strength(models.TextChoices):
    SLIGHT = "slight", "slightly better"
    CLEAR = "clear", "clearly better"


class Side(models.TextChoices):
    """Which of the comparison's responses was shown on the left."""

    FIRST = "first", "first"
    SECOND = "second", "second"


class Kind(models.TextChoices):
    TRAIN = "train", "train (preference data)"
    EVAL = "eval", "eval (policy vs policy)"
    GOLD = "gold", "gold (known answer)"


class Source(models.TextChoices):
    HUMAN = "human", "human"
    IMPORTED = "imported", "imported"
    SIMULATED = "simulated", "simulated"


ADJUDICATIONS = 2  # extra judgments a split comparison may ask for, beyond its campaign's overlap


class CampaignStatus(models.TextChoices):
    OPEN = "open", "open"
    PAUSED = "paused", "paused"
    CLOSED = "closed", "closed"


class Campaign(models.Model):
    """A named set of comparisons with its own guidelines, annotators and serving rules.

    Annotators are served the open campaigns they may judge (every annotator when ``open_to_all``,
    else its ``members``), highest ``priority`` first; a paused or closed campaign serves nothing.
    """

    name = models.CharField(max_length=100, unique=True)
    task = models.CharField(
        max_length=8,
        choices=Task,
        default=Task.PAIRS,
        help_text="Pairs: two answers, which is better. Thumbs: one answer, good or bad (KTO's data). "
        "Rankings: three or four answers in order (every pair they imply).",
    )
    guidelines = models.TextField(
        blank=True, help_text="Markdown, shown to annotators above every comparison."
    )
    overlap = models.PositiveSmallIntegerField(
        default=1, help_text="Judgments wanted per comparison, unless a comparison says otherwise."
    )
    gold_rate = models.FloatField(default=0.1, help_text="Share of served comparisons drawn from gold ones.")
    pair_budget = models.PositiveIntegerField(
        null=True,
        blank=True,
        help_text="Most comparisons of one policy's answers a generation queues here (blank: no cap).",
    )
    status = models.CharField(
        max_length=6, choices=CampaignStatus, default=CampaignStatus.OPEN, db_index=True
    )
    priority = models.IntegerField(default=0, help_text="Higher is served first.")
    open_to_all = models.BooleanField(default=True, help_text="Every annotator may judge it (else: members).")
    adjudicate = models.BooleanField(
        default=True,
        help_text="A comparison whose judgments split with no majority is sent to one more annotator "
        f"(at most {ADJUDICATIONS} more than the campaign's overlap).",
    )
    people_first = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Routed by an AI judge: the pairs it was unsure of are served first.",
    )
    suggest_judge = models.ForeignKey(
        "AIJudge",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Off when blank. An AI judge whose verdict half the annotators see beside each pair it "
        "judged (the other half do not, so the campaign page shows how much the suggestion sways them).",
    )
    members = models.ManyToManyField(settings.AUTH_USER_MODEL, blank=True, related_name="campaigns")
    arena_policies = models.ManyToManyField(
        "generation.Policy",
        blank=True,
        related_name="arena_campaigns",
        help_text="Arena: the pool of policies that meet, two at a time (a pool of one meets itself).",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-priority", "id"]
        constraints = [
            models.CheckConstraint(condition=Q(overlap__gte=1), name="campaign_overlap_positive"),
            models.CheckConstraint(
                condition=Q(gold_rate__gte=0.0) & Q(gold_rate__lte=1.0), name="campaign_gold_rate_share"
            ),
            models.CheckConstraint(
                condition=Q(status__in=CampaignStatus.values), name="campaign_status_valid"
            ),
            models.CheckConstraint(condition=Q(task__in=Task.values), name="campaign_task_valid"),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def item_noun(self) -> str:
        """What the judging page calls one of its items: an answer (thumbs), a ranking, else a
        comparison."""
        return {Task.THUMBS: "answer", Task.RANKINGS: "ranking"}.get(Task(self.task), "comparison")

    @property
    def is_open(self) -> bool:
        return self.status == CampaignStatus.OPEN


class Comparison(models.Model):
    """Two distinct responses to one prompt, in one campaign, waiting for ``overlap`` judgments; in a
    thumbs campaign one response (``response_b`` empty), judged good or bad.

    The database enforces that the responses differ and that a gold comparison (and only a gold one)
    has an expected answer; a trigger (migration 0002) enforces that both responses answer ``prompt``.
    """

    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="comparisons")
    response_a = models.ForeignKey(Response, on_delete=models.PROTECT, related_name="comparisons_as_a")
    response_b = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="comparisons_as_b"
    )
    # A ranking item's third and fourth answers (empty for a pair or a thumbs item).
    response_c = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="comparisons_as_c"
    )
    response_d = models.ForeignKey(
        Response, null=True, blank=True, on_delete=models.PROTECT, related_name="comparisons_as_d"
    )
    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="comparisons")
    kind = models.CharField(max_length=5, choices=Kind, default=Kind.TRAIN, db_index=True)
    overlap = models.PositiveSmallIntegerField(default=1, help_text="How many judgments it wants.")
    gold_answer = models.CharField(max_length=8, choices=Choice, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    # Kept by the one path that records judgments (under the comparison's row lock), so the queue reads
    # only comparisons that still want judgments (a partial index) instead of counting every one.
    judgment_count = models.PositiveIntegerField(default=0, editable=False)
    needs_judgments = models.BooleanField(
        default=True, editable=False, help_text="Fewer judgments than its overlap (gold: always)."
    )
    people_first = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Routed: an AI judge was unsure of it, so it is served before the campaign's other pairs.",
    )
    routed_by = models.ForeignKey(
        "AIJudge",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The AI judge whose confident, order-consistent verdict lowered its overlap by one.",
    )

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(
                fields=["campaign", "id"],
                condition=Q(needs_judgments=True),
                name="comparison_wanting_by_campaign",
            )
        ]
        constraints = [
            models.CheckConstraint(
                condition=~Q(response_a=F("response_b")), name="comparison_distinct_responses"
            ),
            models.CheckConstraint(
                condition=~Q(response_c=F("response_a"))
                & ~Q(response_c=F("response_b"))
                & ~Q(response_d=F("response_a"))
                & ~Q(response_d=F("response_b"))
                & ~Q(response_d=F("response_c")),
                name="comparison_ranking_distinct_responses",
            ),
            models.CheckConstraint(
                condition=Q(response_d__isnull=True) | Q(response_c__isnull=False),
                name="comparison_ranking_fills_c_before_d",
            ),
            models.CheckConstraint(condition=Q(overlap__gte=1), name="comparison_overlap_positive"),
            models.CheckConstraint(
                condition=(Q(kind=Kind.GOLD) & Q(gold_answer__in=Choice.values))
                | (~Q(kind=Kind.GOLD) & Q(gold_answer="")),
                name="comparison_gold_has_answer",
            ),
        ]

    def __str__(self) -> str:
        return f"Comparison {self.pk}"

    @property
    def answers(self) -> list[Response]:
        """Its answers in comparison order (a, b, then a ranking's c and d)."""
        return [
            r for r in (self.response_a, self.response_b, self.response_c, self.response_d) if r is not None
        ]

    def answers_in(self, order: str) -> list[Response]:
        """Its answers in ``order`` (letters of a-d, as ``Assignment.order`` records what an annotator
        was shown); "" is comparison order."""
        answers = self.answers
        return [answers["abcd".index(letter)] for letter in order] if order else answers

    @property
    def is_ranking(self) -> bool:
        return self.response_c_id is not None


class Judgment(models.Model):
    """One annotator's verdict on one comparison. ``choice`` names the comparison's responses
    (first = response_a), never the screen sides; ``left`` records which one was shown on the left."""

    comparison = models.ForeignKey(Comparison, on_delete=models.PROTECT, related_name="judgments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="judgments"
    )
    choice = models.CharField(max_length=8, choices=Choice)
    first_choice = models.CharField(
        max_length=8,
        choices=Choice,
        editable=False,
        help_text="The choice as first given; a later change leaves it (gold accuracy counts it).",
    )
    strength = models.CharField(max_length=6, choices=Strength, blank=True)
    rationale = models.TextField(blank=True)
    left = models.CharField(
        max_length=6, choices=Side, blank=True, help_text="Blank when unknown (imported)."
    )
    time_on_task_ms = models.PositiveIntegerField(
        null=True, blank=True, help_text="From serving to submission, measured by the server."
    )
    source = models.CharField(max_length=9, choices=Source, default=Source.HUMAN, db_index=True)
    ranking = models.JSONField(
        null=True,
        blank=True,
        help_text="A ranking item's ranks, in comparison order (a, b, c, d): 1 is best; equal ranks tie.",
    )
    edit = models.OneToOneField(
        "generation.Response",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="edit_judgment",
        help_text="The answer the annotator wrote with this judgment: it beats both of the comparison's.",
    )
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]
        # An annotator's own judgments, newest first (My judgments, the API), without reading everyone's.
        indexes = [models.Index(fields=["annotator", "-id"], name="judgment_by_annotator_newest")]
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="judgment_one_per_annotator"),
            models.CheckConstraint(condition=Q(choice__in=Choice.values), name="judgment_choice_valid"),
            models.CheckConstraint(
                condition=Q(strength="") | Q(choice__in=[Choice.FIRST, Choice.SECOND]),
                name="judgment_strength_only_for_a_winner",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.annotator} on {self.comparison}: {self.choice}"

    def save(self, *args: Any, **kwargs: Any) -> None:
        if not self.first_choice:
            self.first_choice = self.choice
        super().save(*args, **kwargs)

    @property
    def verdict(self) -> str:
        """The verdict in the screen terms it was given in (left/right/tie/both_bad)."""
        if self.choice in (Choice.FIRST, Choice.SECOND):
            return Verdict.LEFT if self.choice == (self.left or Side.FIRST) else Verdict.RIGHT
        return self.choice

    @property
    def verdict_label(self) -> str:
        """What the annotator pressed, as they saw it: "Left clearly better", "Tie", ..."""
        if self.ranking:
            return self.ranking_label()
        label = Verdict(self.verdict).label
        if self.strength == Strength.CLEAR:
            label = label.replace(" is better", " clearly better")
        return label.replace(" is better", " better").capitalize()

    @cached_property
    def shown_order(self) -> str:
        """A ranking item's answers in the order this annotator was shown them (``Assignment.order``)."""
        assignment = Assignment.objects.filter(
            comparison_id=self.comparison_id, annotator_id=self.annotator_id
        )
        return assignment.values_list("order", flat=True).first() or ""

    def ranking_label(self) -> str:
        """A ranking in the terms the annotator saw: "Answer 2, then Answer 1 = Answer 3" (best first)."""
        letters = self.shown_order or "abcd"[: len(self.ranking)]
        number = {letter: i + 1 for i, letter in enumerate(letters)}  # stored letter -> answer shown
        places: dict[int, list[int]] = {}
        for i, rank in enumerate(self.ranking):
            places.setdefault(rank, []).append(number["abcd"[i]])
        return ", then ".join(
            " = ".join(f"Answer {n}" for n in sorted(places[rank])) for rank in sorted(places)
        )

    def shown_answers(self) -> list[Response]:
        """A ranking item's answers in the order the annotator saw them."""
        return self.comparison.answers_in(self.shown_order)

    def shown(self) -> tuple[Response, Response | None]:
        """The two responses in the order the annotator saw them (left, right)."""
        first, second = self.comparison.response_a, self.comparison.response_b
        return (first, second) if (self.left or Side.FIRST) == Side.FIRST else (second, first)


class Assignment(models.Model):
    """A comparison served to an annotator: the lease that reserves it, and the side shown left.

    The lease keeps a comparison from being served to more annotators than its overlap wants; once
    ``expires_at`` passes without a judgment the slot returns to the pool.
    """

    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.CASCADE,
        related_name="assignments",
        db_index=False,  # the (annotator, expires_at) index below serves lookups by annotator
    )
    left = models.CharField(max_length=6, choices=Side)
    order = models.CharField(
        max_length=4,
        blank=True,
        help_text="A ranking item: the answers in the order shown, as letters of a-d (e.g. 'cabd').",
    )
    served_at = models.DateTimeField()
    expires_at = models.DateTimeField(db_index=True)
    skipped_at = models.DateTimeField(null=True, blank=True, help_text="Skipped: not served to them again.")
    suggested = models.BooleanField(
        default=False,
        db_default=False,
        help_text="Shown with an AI judge's verdict (the campaign's suggestions, to half its annotators).",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["comparison", "annotator"], name="assignment_one_per_annotator"),
        ]
        indexes = [
            # The annotator's live leases (served again on a reload): a judged or skipped lease has
            # expired, so this reads the one or two live rows, not every comparison they ever saw.
            models.Index(fields=["annotator", "expires_at"], name="assignment_annotator_live"),
        ]

    def __str__(self) -> str:
        return f"{self.comparison} for {self.annotator}"


class JudgmentRevision(models.Model):
    """What a judgment said before its annotator changed it, and when it was changed."""

    judgment = models.ForeignKey(Judgment, on_delete=models.CASCADE, related_name="revisions")
    choice = models.CharField(max_length=8, choices=Choice)
    strength = models.CharField(max_length=6, choices=Strength, blank=True)
    rationale = models.TextField(blank=True)
    ranking = models.JSONField(
        null=True, blank=True, help_text="A ranking item: the ranks before the change."
    )
    changed_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.judgment} was {self.choice} until {self.changed_at:%Y-%m-%d %H:%M}"


class TurnStatus(models.TextChoices):
    GENERATING = "generating", "generating"
    ANSWERED = "answered", "answered"  # both answers in (complete, cut off or stopped): vote now
    FAILED = "failed", "failed"  # a generation failed; the conversation is kept, regenerate to retry
    VOTED = "voted", "voted"


class ArenaConversation(models.Model):
    """A conversation in an arena campaign: one annotator, two policies hidden behind Left and Right
    until the first vote, each answering every user turn; the turns go on from the preferred answer.
    In a pool of one, both sides are the same policy (``on_policy``)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.PROTECT, related_name="conversations")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="arena_conversations"
    )
    policy_a = models.ForeignKey("generation.Policy", on_delete=models.PROTECT, related_name="+")
    policy_b = models.ForeignKey("generation.Policy", on_delete=models.PROTECT, related_name="+")
    left = models.CharField(max_length=6, choices=Side, help_text="Whose answers are shown on the left.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"Arena conversation {self.pk} of {self.annotator}"

    @property
    def on_policy(self) -> bool:
        """Two samples of one policy (a pool of one): a pair that trains it, no leaderboard game."""
        return self.policy_a_id == self.policy_b_id


class ArenaTurn(models.Model):
    """One user turn and the two policies' answers to it. ``messages`` is the conversation so far,
    ending with this user message: the prompt both answered (and the comparison's, once voted)."""

    conversation = models.ForeignKey(ArenaConversation, on_delete=models.CASCADE, related_name="turns")
    number = models.PositiveSmallIntegerField()
    messages = models.JSONField()
    status = models.CharField(max_length=10, choices=TurnStatus, default=TurnStatus.GENERATING)
    text_a = models.TextField(blank=True)
    text_b = models.TextField(blank=True)
    finish_a = models.CharField(max_length=10, blank=True, help_text="stop, length, cancelled or error")
    finish_b = models.CharField(max_length=10, blank=True)
    tokens_a = models.PositiveIntegerField(null=True, blank=True)
    tokens_b = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    stop_requested = models.BooleanField(default=False)
    attempt = models.PositiveIntegerField(
        default=1, help_text="Which generation of the answers this is (Regenerate adds one)."
    )
    requested_at = models.DateTimeField(
        default=timezone.now, help_text="When this attempt was asked for: the arena runner's queue order."
    )
    claimed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the arena runner began generating this attempt."
    )
    heartbeat_at = models.DateTimeField(
        null=True, blank=True, help_text="The runner's last write of this attempt (its pieces, or a beat)."
    )
    comparison = models.OneToOneField(
        Comparison, null=True, blank=True, on_delete=models.PROTECT, related_name="arena_turn"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["conversation", "number"]
        constraints = [
            models.UniqueConstraint(fields=["conversation", "number"], name="arena_turn_number_unique"),
            models.CheckConstraint(condition=Q(status__in=TurnStatus.values), name="arena_turn_status_valid"),
            # A voted turn holds its one comparison: a vote is recorded once, whatever streams ran.
            models.CheckConstraint(
                condition=~Q(status=TurnStatus.VOTED) | Q(comparison__isnull=False),
                name="arena_turn_voted_has_comparison",
            ),
        ]
        indexes = [models.Index(fields=["status", "claimed_at", "requested_at"], name="arena_turn_queue")]

    def __str__(self) -> str:
        return f"Turn {self.number} of {self.conversation}"

    @property
    def stopped(self) -> bool:
        """Whether the annotator stopped either answer before its end (such a pair is not voted)."""
        return "cancelled" in (self.finish_a, self.finish_b)


class ArenaRequest(models.Model):
    """One generation an annotator asked for (a new conversation, a next turn, a regeneration): the
    arena's per-minute limit counts these, from the first request."""

    annotator = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    turn = models.ForeignKey(ArenaTurn, on_delete=models.CASCADE, related_name="requests")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["annotator", "created_at"], name="arena_request_recent")]

    def __str__(self) -> str:
        return f"Arena request by {self.annotator} at {self.created_at:%H:%M:%S}"


DEFAULT_RUBRIC = """You judge which of two answers to a conversation is better for the person who asked.

{guidelines}

The conversation:
{prompt}

Answer A:
{first}

Answer B:
{second}

Which answer is better? Reply with the single letter A or B."""


class AIJudge(models.Model):
    """A model that judges comparisons beside people: an endpoint (a policy the project serves, or any
    OpenAI-compatible chat API by URL, its key read from the environment variable named here, never
    stored) and a rubric. Its verdicts are ``AIVerdict`` rows, never ``Judgment`` rows: no count,
    overlap, queue, export or reliability fit of people's judgments can take one by accident."""

    name = models.CharField(max_length=100, unique=True)
    policy = models.ForeignKey(
        "generation.Policy",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        help_text="A policy the project serves (the generation process answers for it); else the URL.",
    )
    url = models.URLField(blank=True, help_text="An OpenAI-compatible API's base URL (…/v1 is added).")
    model = models.CharField(max_length=300, blank=True, help_text="The model name the URL serves.")
    api_key_env = models.CharField(
        max_length=100,
        blank=True,
        help_text="The environment variable holding its API key (the key is not stored).",
    )
    rubric = models.TextField(
        default=DEFAULT_RUBRIC,
        help_text="The judge's instructions: {guidelines}, {prompt}, {first} and {second} are filled in; it "
        "must ask for the single letter A or B.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.CheckConstraint(
                condition=(Q(policy__isnull=False) & Q(url="")) | (Q(policy__isnull=True) & ~Q(url="")),
                name="ai_judge_one_endpoint",
            )
        ]

    def __str__(self) -> str:
        return self.name


class AIVerdict(models.Model):
    """An AI judge's verdict on one pair, from two readings (its answers in both orders): the choice in
    the comparison's own order, the probability that response_a is better (from the verdict tokens'
    log-probabilities; 0 or 1 where the endpoint gives none), and whether both readings agreed."""

    judge = models.ForeignKey(AIJudge, on_delete=models.CASCADE, related_name="verdicts")
    comparison = models.ForeignKey(Comparison, on_delete=models.CASCADE, related_name="ai_verdicts")
    choice = models.CharField(max_length=8, choices=Choice)
    probability_first = models.FloatField()
    consistent = models.BooleanField()
    readings = models.JSONField(default=list, help_text="Each reading: the order shown and the probability.")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["judge", "comparison"], name="ai_verdict_once"),
            models.CheckConstraint(
                condition=Q(choice__in=[Choice.FIRST, Choice.SECOND]), name="ai_verdict_side"
            ),
            models.CheckConstraint(
                condition=Q(probability_first__gte=0.0) & Q(probability_first__lte=1.0),
                name="ai_verdict_probability",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.judge} on comparison {self.comparison_id}: {self.choice}"


class JudgeRunStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"


class JudgeRun(models.Model):
    """An AI judge judging a campaign's pairs as a background job (``manage.py db_worker``): how far it
    got, and why it stopped if it failed (a rerun judges what is left)."""

    judge = models.ForeignKey(AIJudge, on_delete=models.CASCADE, related_name="runs")
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="judge_runs")
    status = models.CharField(max_length=9, choices=JudgeRunStatus, default=JudgeRunStatus.QUEUED)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(null=True, blank=True)
    skipped = models.PositiveIntegerField(
        default=0,
        db_default=0,
        help_text="Pairs the judge gave no verdict on (neither A nor B): left unjudged.",
    )
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["judge", "campaign"],
                condition=Q(status__in=["queued", "running"]),
                name="judge_run_one_at_a_time",
            )
        ]

    def __str__(self) -> str:
        return f"{self.judge} on {self.campaign} ({self.status})"

    @property
    def active(self) -> bool:
        return self.status in (JudgeRunStatus.QUEUED, JudgeRunStatus.RUNNING)
