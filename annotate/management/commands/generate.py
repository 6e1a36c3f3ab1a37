import time

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from annotate.services import PAIRINGS, comparisons_generate, comparisons_generate_versus
from config.errors import DomainError
from generation.backends import BACKENDS, BackendUnavailable, ModelSpec, Sampling, backend_load
from generation.models import Policy, Prompt, Split
from generation.services import policy_named, prompts_pending


def _policy(name: str) -> Policy:
    try:
        return policy_named(name)
    except DomainError as exc:
        raise CommandError(exc.detail) from exc


class Command(BaseCommand):
    help = (
        "Sample responses from a policy and queue comparisons of distinct ones. Resumable: a rerun for the "
        "same policy and round skips prompts already done. With --vs OLD: blind eval comparisons, one "
        "response of each policy per prompt."
    )

    def add_arguments(self, parser):
        parser.add_argument("--policy", required=True)
        parser.add_argument("--vs", help="an older policy: queue policy-vs-policy eval comparisons")
        parser.add_argument("--prompts", default="all-pending", help="all-pending, or N: the first N pending")
        parser.add_argument("--split", choices=Split.values, help="default: train (eval with --vs)")
        parser.add_argument("--samples", type=int, default=4, help="K responses per prompt, 2..16")
        parser.add_argument("--temperature", type=float, default=0.8)
        parser.add_argument("--top-p", type=float, default=0.95)
        parser.add_argument("--max-new-tokens", type=int, default=256)
        parser.add_argument("--seed", type=int, default=0)
        parser.add_argument("--backend", choices=BACKENDS, default="auto")
        parser.add_argument("--pairs", choices=PAIRINGS, default="random")
        parser.add_argument("--round", dest="round_label", default="", help="round label")
        parser.add_argument("--overlap", type=int, default=1, help="judgments wanted per comparison")
        parser.add_argument("--batch-size", type=int, help="prompts per generate call (default: fits memory)")

    def handle(self, *args, **o):
        policy = _policy(o["policy"])
        old = _policy(o["vs"]) if o["vs"] else None
        if old is None and not 2 <= o["samples"] <= 16:
            raise CommandError(f"--samples must be between 2 and 16 (got {o['samples']})")
        if o["overlap"] < 1:
            raise CommandError(f"--overlap must be at least 1 (got {o['overlap']})")
        split = o["split"] or (Split.EVAL if old else Split.TRAIN)
        pending = prompts_pending(
            policy=policy, round_label=o["round_label"], prompts=Prompt.objects.filter(split=split)
        )
        if o["prompts"] != "all-pending":
            if not o["prompts"].isdigit() or int(o["prompts"]) < 1:
                raise CommandError(
                    f"--prompts must be all-pending or a positive number (got {o['prompts']!r})"
                )
            pending = pending[: int(o["prompts"])]
        prompts = list(pending)
        if not prompts:
            self.stdout.write(
                f"nothing to do: every {split} prompt already has responses from {policy.name} "
                f"in round {o['round_label']!r}"
            )
            return
        try:
            sampling = Sampling(
                samples=1 if old else o["samples"],
                temperature=o["temperature"],
                top_p=o["top_p"],
                max_new_tokens=o["max_new_tokens"],
                seed=o["seed"],
            )
            options = {"batch_size": o["batch_size"]} if o["batch_size"] else {}
            load = lambda p: backend_load(o["backend"], ModelSpec(p.location, p.adapter), **options)  # noqa: E731
            backend = load(policy)
            started = time.perf_counter()  # generation time: model loading excluded
            report = self._run(policy, old, prompts, sampling, backend, load, o)
        except (ValueError, BackendUnavailable) as exc:
            raise CommandError(str(exc)) from exc
        except DomainError as exc:
            raise CommandError(exc.detail) from exc
        elapsed = time.perf_counter() - started
        extra = ", ".join(f"{k}: {v}" for k, v in report.extra.items() if k != "comparisons")
        self.stdout.write(
            f"{policy.name} [{backend.name}] round {o['round_label']!r}: {report.prompts} prompts, "
            f"{report.responses} responses stored, {report.duplicates} exact duplicates dropped, "
            f"{report.extra.get('comparisons', 0)} comparisons queued{'; ' + extra if extra else ''} "
            f"({elapsed:.1f} s, {report.tokens / elapsed:.1f} tokens/s)"
        )

    def _run(self, policy, old, prompts, sampling, backend, load, o):
        total = len(prompts) * (2 if old else 1)
        with tqdm(total=total, unit="prompt", desc="generate", disable=None) as bar:
            started, tokens = time.perf_counter(), 0

            def progress(done_prompts: int, done_tokens: int) -> None:
                nonlocal tokens
                tokens += done_tokens
                bar.update(done_prompts)
                elapsed = max(time.perf_counter() - started, 1e-9)
                bar.set_postfix(prompts_s=f"{bar.n / elapsed:.2f}", tokens_s=f"{tokens / elapsed:.1f}")

            if old is None:
                return comparisons_generate(
                    policy=policy,
                    prompts=prompts,
                    sampling=sampling,
                    backend=backend,
                    pairs=o["pairs"],
                    round_label=o["round_label"],
                    overlap=o["overlap"],
                    on_progress=progress,
                )
            return comparisons_generate_versus(
                new=policy,
                old=old,
                prompts=prompts,
                sampling=sampling,
                new_backend=backend,
                old_backend=load(old),
                round_label=o["round_label"],
                overlap=o["overlap"],
                on_progress=progress,
            )
