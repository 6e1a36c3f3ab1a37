from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from generation.messages import messages_from_text, messages_hash


class Split(models.TextChoices):
    TRAIN = "train", "train"
    EVAL = "eval", "eval (held out)"


class Tag(models.Model):
    name = models.CharField(max_length=100, unique=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class Prompt(models.Model):
    """What the model is asked: a plain string (``text``) or a conversation (``messages``), never both."""

    text = models.TextField(blank=True, help_text="A plain prompt; empty when 'messages' is set.")
    messages = models.JSONField(
        null=True, blank=True, help_text="A conversation ending with a user turn; null for a plain prompt."
    )
    split = models.CharField(max_length=5, choices=Split, default=Split.TRAIN, db_index=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="prompts")
    source = models.CharField(
        max_length=300, blank=True, help_text="Where the prompt came from (file, dataset)."
    )
    content_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(
                condition=(Q(messages__isnull=True) & ~Q(text="")) | (Q(messages__isnull=False) & Q(text="")),
                name="prompt_text_xor_messages",
            ),
        ]

    def __str__(self) -> str:
        content = self.as_messages()[-1]["content"].strip()
        return content.splitlines()[0][:80] if content else f"Prompt {self.pk}"

    def save(self, *args, **kwargs) -> None:
        self.content_hash = messages_hash(self.as_messages())
        super().save(*args, **kwargs)

    @property
    def is_chat(self) -> bool:
        return self.messages is not None

    def as_messages(self) -> list[dict[str, str]]:
        """The prompt as a chat conversation, whichever form it was given in."""
        return self.messages if self.messages is not None else messages_from_text(self.text)

    def shown_messages(self) -> tuple[list[dict[str, str]], int]:
        """The turns a page shows (the last ``PREFLOOP_MAX_TURNS``, where the answers follow on) and
        how many earlier ones it leaves out: a conversation stored before the cap stays cheap to show."""
        messages = self.as_messages()
        keep = settings.PREFLOOP_MAX_TURNS
        return messages[-keep:], max(0, len(messages) - keep)


class LocationKind(models.TextChoices):
    DIRECTORY = "directory", "directory (Hugging Face format)"
    HUB = "hub", "hub id"
    GGUF = "gguf", "GGUF file"


class Policy(models.Model):
    """A model checkpoint that can generate; policies form a lineage through ``parent``."""

    name = models.CharField(max_length=100, unique=True)
    location = models.CharField(max_length=1000, help_text="A directory, a hub id, or a .gguf file.")
    location_kind = models.CharField(max_length=10, choices=LocationKind, default=LocationKind.DIRECTORY)
    adapter = models.CharField(max_length=1000, blank=True, help_text="A LoRA adapter directory, if any.")
    # A LoRA round's policy is its merged model (``location``: what the next round trains) and also
    # this adapter on this base: live answers come from the base's engine, one engine for many policies.
    lora_base = models.CharField(
        max_length=1000, blank=True, help_text="Served as a LoRA adapter: the base model it applies to."
    )
    lora_adapter = models.CharField(
        max_length=1000,
        blank=True,
        help_text="Served as a LoRA adapter: the adapter directory (the same weights as location).",
    )
    parent = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.PROTECT, related_name="children"
    )
    notes = models.TextField(blank=True)
    held_back = models.BooleanField(
        default=False,
        help_text="Drifted beyond its round's budgets: not a starting point, no follow-up, until promoted.",
    )
    held_back_reason = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "policies"

    def __str__(self) -> str:
        return self.name


class FinishReason(models.TextChoices):
    STOP = "stop", "stop (end of sequence)"
    LENGTH = "length", "length (hit max tokens)"


class Response(models.Model):
    """One completion of a prompt. ``policy`` is null for responses imported from outside."""

    prompt = models.ForeignKey(Prompt, on_delete=models.PROTECT, related_name="responses")
    policy = models.ForeignKey(
        Policy, null=True, blank=True, on_delete=models.PROTECT, related_name="responses"
    )
    text = models.TextField(blank=True)
    sampling = models.JSONField(default=dict, blank=True, help_text="Sampling parameters used.")
    seed = models.BigIntegerField(null=True, blank=True)
    token_count = models.PositiveIntegerField(null=True, blank=True)
    finish_reason = models.CharField(max_length=10, choices=FinishReason, blank=True)
    mean_logprob = models.FloatField(null=True, blank=True, help_text="Mean token log-probability.")
    base_nll = models.FloatField(
        null=True,
        blank=True,
        help_text="Per-token negative log-likelihood under the base policy of its lineage (held-out answers).",
    )
    heldout = models.BooleanField(
        default=False, help_text="The policy's one answer to a held-out prompt, compared blind with others'."
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="written_responses",
        help_text="The person who wrote it (an edit on the judging page); blank for a model's answer.",
    )
    improves = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="edits",
        help_text="The answer this edit rewrote; blank for a model's answer or one written from scratch.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["policy", "heldout", "prompt"], name="response_policy_heldout")]
        constraints = [
            models.CheckConstraint(
                condition=Q(author__isnull=True) | Q(policy__isnull=True),
                name="response_by_a_model_or_a_person",
            )
        ]

    def __str__(self) -> str:
        return f"Response {self.pk} to prompt {self.prompt_id}"
