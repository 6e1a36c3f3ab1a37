import sys
import time

from django.core.management.base import CommandError
from tqdm import tqdm

from annotate.services.campaigns import campaign_get_or_create
from annotate.services.pairing import prompts_pending
from config.commands import Command as BaseCommand
from generation.backends import BackendUnavailable, GenerationFailed, ModelSpec, Sampling, backend_load
from generation.models import Prompt, Split
from generation.services import TokenMeter, policy_named
from training.answering import Queueing, comparisons_generate
from training.options import GENERATION
from training.round_follow_up import evaluation_campaign, evaluations_queue, heldout_answer

DEFAULT_CAMPAIGN = "default"


class Command(BaseCommand):
    help = (
        "Sample responses from a policy and queue comparisons of distinct ones in a campaign. Resumable: "
        "a rerun for the same policy and campaign skips prompts already done. With --vs OLD: both policies "
        "answer every held-out prompt once (answers kept and reused) and blind eval comparisons of the two "
        "are queued."
    )

    def add_arguments(self, parser):
        parser.add_argument("--policy", required=True)
        parser.add_argument("--vs", help="an older policy: queue policy-vs-policy eval comparisons")
        parser.add_argument("--prompts", default="all-pending", help="all-pending, or N: the first N pending")
        parser.add_argument("--split", choices=Split.values, default=Split.TRAIN, help="default: train")
        for option in GENERATION:  # sampling, pairing and backend, with their one set of defaults
            if option.name != "overlap":
                parser.add_argument(
                    "--" + option.name.replace("_", "-"),
                    type=option.kind,
                    choices=option.choices,
                    default=option.default,
                    help=f"{option.help} (default {option.default})",
                )
        parser.add_argument(
            "--campaign",
            help=f"campaign of the comparisons, created if new (default: {DEFAULT_CAMPAIGN!r}; with --vs: "
            "'Blind evaluation <policy id>/<old id>': annotators see it, so it names no policy)",
        )
        parser.add_argument(
            "--overlap", type=int, help="judgments wanted per comparison (default: the campaign's)"
        )
        parser.add_argument("--batch-size", type=int, help="prompts per generate call (default: fits memory)")

    def handle(self, *args, **o):
        policy = policy_named(o["policy"])
        old = policy_named(o["vs"]) if o["vs"] else None
        if old is None and not 2 <= o["samples"] <= 16:
            raise CommandError(f"--samples must be between 2 and 16 (got {o['samples']})")
        if o["overlap"] is not None and o["overlap"] < 1:
            raise CommandError(f"--overlap must be at least 1 (got {o['overlap']})")
        limit = None
        if o["prompts"] != "all-pending":
            if not o["prompts"].isdigit() or int(o["prompts"]) < 1:
                raise CommandError(
                    f"--prompts must be all-pending or a positive number (got {o['prompts']!r})"
                )
            limit = int(o["prompts"])
        sampling = Sampling(
            samples=1 if old else o["samples"],
            temperature=o["temperature"],
            top_p=o["top_p"],
            max_new_tokens=o["max_new_tokens"],
            seed=o["seed"],
        )
        options = {"batch_size": o["batch_size"]} if o["batch_size"] else {}

        def load(p):
            try:
                return backend_load(o["backend"], ModelSpec(p.location, p.adapter), **options)
            except BackendUnavailable as exc:
                raise CommandError(str(exc)) from exc

        if old is not None:
            return self._versus(policy, old, sampling, load, o)
        campaign = campaign_get_or_create(name=o["campaign"] or DEFAULT_CAMPAIGN)
        pending = prompts_pending(
            policy=policy, campaign=campaign, prompts=Prompt.objects.filter(split=o["split"])
        )
        prompts = list(pending[:limit] if limit else pending)
        if not prompts:
            self.stdout.write(
                f"nothing to do: every {o['split']} prompt already has compared answers from {policy.name} "
                f"in campaign {campaign.name!r}"
            )
            return
        backend = load(policy)
        started = time.perf_counter()  # generation time: model loading excluded
        try:
            with self._progress(
                len(prompts), most_tokens=len(prompts) * sampling.samples * sampling.max_new_tokens
            ) as progress:
                report = comparisons_generate(
                    policy=policy,
                    prompts=prompts,
                    sampling=sampling,
                    backend=backend,
                    campaign=campaign,
                    queueing=Queueing.of(o),
                    on_progress=progress,
                    on_tokens=progress.on_tokens,
                )
        except GenerationFailed as exc:
            raise CommandError(str(exc)) from exc
        finally:
            backend.close()  # a vLLM server started for this run stops with it
        elapsed = max(time.perf_counter() - started, 1e-9)
        extra = ", ".join(f"{k}: {v}" for k, v in report.extra.items() if k != "comparisons")
        self.stdout.write(
            f"{policy.name} [{backend.name}] campaign {campaign.name!r}: {report.prompts} prompts, "
            f"{report.responses} responses stored, {report.duplicates} exact duplicates dropped, "
            f"{report.extra.get('comparisons', 0)} comparisons queued{'; ' + extra if extra else ''} "
            f"({elapsed:.1f} s, {report.tokens / elapsed:.1f} tokens/s)"
        )

    def _versus(self, policy, old, sampling, load, o):
        for who in (old, policy):
            with self._progress(None) as progress:
                heldout_answer(
                    policy=who,
                    sampling=sampling,
                    backend_name=o["backend"],
                    on_start=lambda n: progress,
                    on_tokens=progress.on_tokens,
                )
        campaign = (
            campaign_get_or_create(name=o["campaign"])
            if o["campaign"]
            else evaluation_campaign(name=f"Blind evaluation {policy.pk}/{old.pk}")
        )
        report = evaluations_queue(
            policy=policy, opponent=old, campaign=campaign, overlap=o["overlap"], seed=o["seed"]
        )
        extra = ", ".join(f"{k}: {v}" for k, v in report.extra.items() if k != "comparisons")
        self.stdout.write(
            f"{policy.name} vs {old.name}: {report.extra.get('comparisons', 0)} blind eval comparisons queued "
            f"in campaign {campaign.name!r}{'; ' + extra if extra else ''}"
        )

    def _progress(self, total, most_tokens=None):
        """Progress of a generation: a tqdm bar on a terminal (prompts, tokens, tokens/s, refreshed
        every 2 s while a batch decodes), else a plain line every 5 s. Prompts finish a batch at a
        time, so the time left is bounded from tokens: at most ``most_tokens`` (every answer to its
        cap) at the rate so far; most answers end before it."""
        command = self
        interactive = sys.stderr.isatty()

        class Progress:
            def __enter__(self):
                self.bar = tqdm(total=total, unit="prompt", desc="generate", disable=not interactive)
                self.started, self.prompts = time.perf_counter(), 0
                self.on_tokens = TokenMeter(self.show, every=2.0 if interactive else 5.0)
                return self

            def show(self, tokens: int, rate: float) -> None:
                left = ""
                if most_tokens and rate > 0 and tokens >= 200:  # a rate from the first tokens misleads
                    minutes = max(0.0, most_tokens - tokens) / rate / 60
                    left = f"at most {minutes:.0f} min left" if minutes >= 1 else "under a minute left"
                if interactive:
                    self.bar.set_postfix(tokens=tokens, tokens_s=f"{rate:.1f}", left=left or "?")
                else:
                    # Prompts finish a batch at a time (a batch often holds them all), so the tokens
                    # written, out of the most there can be, are what moves; the prompts come after.
                    most = f" of at most {most_tokens:,}" if most_tokens else ""
                    done = f", {self.prompts}/{total} prompts stored (a batch at a time)" if total else ""
                    command.say(
                        f"generate: {tokens:,} tokens written{most}{done}, {rate:.1f} tokens/s"
                        f"{', ' + left + ' at this rate' if left else ''}"
                    )

            def __call__(self, done_prompts: int, done_tokens: int) -> None:
                self.prompts += done_prompts
                self.bar.update(done_prompts)

            def __exit__(self, *exc):
                self.bar.close()

        return Progress()
