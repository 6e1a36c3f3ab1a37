"""A DPO round: the data it trained on, how, what came out, and how it went step by step.

training/dpo/ stays free of Django; this app drives it (services.py) and records what it did.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from annotate.models import Campaign, Comparison
from generation.models import Policy


class RoundStatus(models.TextChoices):
    QUEUED = "queued", "queued"
    RUNNING = "running", "running"
    SUCCEEDED = "succeeded", "succeeded"
    FAILED = "failed", "failed"
    CANCELLED = "cancelled", "cancelled"


FINISHED = (RoundStatus.SUCCEEDED, RoundStatus.FAILED, RoundStatus.CANCELLED)


def silent_before(now: datetime | None = None) -> datetime:
    """A round of the worker's last heard from before this is silent (``TrainingRound.is_silent``)."""
    return (now or timezone.now()) - timedelta(seconds=settings.PREFLOOP_ROUND_STALE_SECONDS)


class TrainingRound(models.Model):
    """One DPO round from ``policy`` on the judged comparisons of its rounds.

    The database enforces: a succeeded round has an output policy and no other status has one; a
    failed round says why; a finished round has an end time, an unfinished one has none.
    """

    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="rounds_started")
    reference = models.ForeignKey(
        Policy,
        on_delete=models.PROTECT,
        related_name="rounds_as_reference",
        help_text="The model the DPO loss holds the policy close to (default: the starting policy).",
    )
    output_policy = models.OneToOneField(
        Policy, null=True, blank=True, on_delete=models.PROTECT, related_name="trained_by"
    )
    status = models.CharField(max_length=9, choices=RoundStatus, default=RoundStatus.QUEUED, db_index=True)
    cancel_requested = models.BooleanField(default=False)
    following_up = models.BooleanField(
        default=False, help_text="Trained and registered; the new policy is still generating what comes next."
    )
    hyperparameters = models.JSONField(default=dict, blank=True, help_text="DPOConfig fields set.")
    min_pairs = models.PositiveIntegerField(default=8, help_text="Fewer pairs: the round refuses to run.")
    then_generate = models.PositiveIntegerField(
        default=0, help_text="Prompts the new policy answers after training (their comparisons queued)."
    )
    generation = models.JSONField(
        default=dict, blank=True, help_text="Sampling and pairing for then_generate (samples, overlap, ...)."
    )
    campaign = models.ForeignKey(
        Campaign,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rounds_feeding",
        help_text="Where the comparisons of the new policy's answers to train prompts are queued.",
    )
    eval_campaign = models.ForeignKey(
        Campaign,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rounds_evaluating",
        help_text="Where the blind held-out comparisons of the new policy against its parent are queued.",
    )
    aggregation = models.CharField(
        max_length=12,
        default="majority",
        help_text="How a comparison's judgments become its label: majority or dawid-skene (annotate.selectors).",
    )
    ai_judges = models.ManyToManyField(
        "annotate.AIJudge",
        blank=True,
        related_name="+",
        help_text="AI judges whose verdicts count beside people's (none: people's judgments only).",
    )
    guards = models.JSONField(
        default=dict, blank=True, help_text="kl_budget, fluency_limit, outlier_limit (training.options)."
    )
    drift = models.JSONField(
        default=dict, blank=True, help_text="The new policy's drift on the held-out prompts (training.drift)."
    )
    kl_checks = models.JSONField(
        default=list,
        blank=True,
        help_text="With the early stop (kl_every): [step, held-out KL estimate] of each check.",
    )
    stopped_early = models.JSONField(
        null=True,
        blank=True,
        help_text="Where the held-out KL estimate passed the budget: step, kl, budget, kept_step.",
    )
    output_dir = models.CharField(max_length=1000, blank=True)
    data_file = models.CharField(max_length=1000, blank=True, help_text="The exported pairs (JSONL).")
    data_sha256 = models.CharField(max_length=64, blank=True)
    data_card = models.TextField(
        blank=True,
        help_text="The exported data's card (README.md beside data.jsonl): who judged, how, what was left out.",
    )
    pairs = models.PositiveIntegerField(null=True, blank=True, help_text="Pairs trained on.")
    excluded = models.JSONField(
        default=dict, blank=True, help_text="Comparisons left out of the data, by reason."
    )
    steps_total = models.PositiveIntegerField(null=True, blank=True)
    log = models.TextField(blank=True, help_text="The worker's log lines for this round (the tail).")
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True, help_text="The background task running it.")
    started_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True, help_text="Last sign of life from the worker.")

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(status=RoundStatus.SUCCEEDED, output_policy__isnull=False)
                | (~Q(status=RoundStatus.SUCCEEDED) & Q(output_policy__isnull=True)),
                name="round_output_iff_succeeded",
            ),
            models.CheckConstraint(
                condition=~Q(status=RoundStatus.FAILED) | ~Q(error=""), name="round_failure_has_error"
            ),
            models.CheckConstraint(
                condition=Q(status__in=FINISHED, finished_at__isnull=False)
                | (~Q(status__in=FINISHED) & Q(finished_at__isnull=True)),
                name="round_finished_has_end_time",
            ),
            models.CheckConstraint(condition=Q(status__in=RoundStatus.values), name="round_status_valid"),
        ]

    def __str__(self) -> str:
        return f"Round {self.pk} from {self.policy}"

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED

    @property
    def is_silent(self) -> bool:
        """Running or following up with no sign of life for ``PREFLOOP_ROUND_STALE_SECONDS``: its worker
        has probably died. Pages show it so; a read never ends it (the next worker does, or Cancel)."""
        last_sign = self.heartbeat_at or self.started_at
        return (
            (self.status == RoundStatus.RUNNING or self.following_up)
            and last_sign is not None
            and last_sign < silent_before()
        )

    @property
    def can_retry(self) -> bool:
        """Only a round that failed or was cancelled is retried (a new round with its settings)."""
        return self.status in (RoundStatus.FAILED, RoundStatus.CANCELLED)

    @property
    def follow_up_ended_at(self) -> datetime | None:
        """When its follow-up (the new policy answering) ended, after training finished: the worker's
        last sign of life once it has ended; None while it runs or when there was none."""
        if (
            not self.output_policy_id
            or self.following_up
            or self.finished_at is None
            or self.heartbeat_at is None
        ):
            return None
        return self.heartbeat_at if self.heartbeat_at > self.finished_at else None

    @property
    def is_settled(self) -> bool:
        """Finished, and nothing more will happen: the page stops polling."""
        return self.is_finished and not self.following_up


class RoundMetric(models.Model):
    """One optimizer step's metrics, with TRL's names (``loss``, ``rewards/accuracies``, ...)."""

    round = models.ForeignKey(TrainingRound, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    values = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["round", "step"]
        constraints = [models.UniqueConstraint(fields=["round", "step"], name="round_metric_one_per_step")]

    def __str__(self) -> str:
        return f"{self.round} step {self.step}"


class Evaluation(models.Model):
    """What a blind eval comparison is for: ``policy``'s held-out answer against ``opponent``'s,
    asked for by ``training_round`` (null when staff queued it by hand with ``generate --vs``)."""

    comparison = models.OneToOneField(
        Comparison, primary_key=True, on_delete=models.CASCADE, related_name="evaluation"
    )
    policy = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="evaluations")
    opponent = models.ForeignKey(Policy, on_delete=models.PROTECT, related_name="evaluations_as_opponent")
    training_round = models.ForeignKey(
        TrainingRound, null=True, blank=True, on_delete=models.SET_NULL, related_name="evaluations"
    )

    class Meta:
        ordering = ["comparison"]
        constraints = [
            models.CheckConstraint(condition=~Q(policy=models.F("opponent")), name="evaluation_two_policies"),
        ]

    def __str__(self) -> str:
        return f"{self.policy} vs {self.opponent} ({self.comparison})"
