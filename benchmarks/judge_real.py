"""The embedded SmolLM2-135M-Instruct as a real AI judge, through its vLLM engine (the generation
process's code, in this process), against simulated people: what its kappa, consistency,
calibration and Dawid-Skene weight come to, and what routing with it does.

The pairs: each of the demo's 14 single-turn prompts answered once by the embedded model (transformers, 96 new
tokens, greedy), then paired with the answers to three other prompts (42 pairs, the sides shuffled):
the answer to the prompt itself is the better one. People: ``simulate_annotators``'s path with the
"on-topic-shorter" oracle (an answer naming the prompt's key word wins, else the shorter), five
people each reversing 10% of their verdicts, overlap 3. Needs ``.venv-vllm`` (``make vllm``).

    python benchmarks/judge_real.py
"""

from __future__ import annotations

import json
import os
import random
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.databases import ROOT, bench_env, fresh_database


def main() -> None:
    os.environ.update(bench_env(fresh_database("sqlite", "judge_real")))
    import django

    django.setup()
    from django.conf import settings

    from annotate.models import AIVerdict, Choice
    from annotate.selectors import comparisons_reliability, export_comparisons
    from annotate.services.ai_judges import (
        judge_agreement_with_people,
        judge_campaign,
        judge_register,
        judge_route,
    )
    from annotate.services.simulation import comparisons_simulate
    from generation.backends import ModelSpec, Sampling
    from generation.backends.transformers import TransformersBackend
    from generation.embedded import embedded_materialise
    from generation.engines import Served, engine_estimate_gb
    from generation.server import server_make
    from tests.factories import (
        CampaignFactory,
        ComparisonFactory,
        PolicyFactory,
        PromptFactory,
        ResponseFactory,
    )

    print("command: python benchmarks/judge_real.py")
    base = str(embedded_materialise())
    rows = [json.loads(line) for line in (ROOT / "annotate/demo/prompts.jsonl").read_text().splitlines()]
    texts = [row["prompt"] for row in rows if "prompt" in row]  # the single-turn ones
    backend = TransformersBackend(ModelSpec(base))
    greedy = Sampling(samples=1, temperature=0.0, top_p=1.0, max_new_tokens=96)
    answers = [c[0].text for c in backend.generate([[{"role": "user", "content": t}] for t in texts], greedy)]
    backend.close()
    rng = random.Random(0)
    policy = PolicyFactory(name="smollm2", location=base)
    campaign = CampaignFactory(name="judged", overlap=3, gold_rate=0.0)
    truth = {}
    for i, text in enumerate(texts):
        prompt = PromptFactory(text=text)
        own = ResponseFactory(prompt=prompt, text=answers[i], policy=policy)
        for k in (1, 2, 3):
            other = ResponseFactory(prompt=prompt, text=answers[(i + k) % len(texts)])
            first, second = (own, other) if rng.random() < 0.5 else (other, own)
            comparison = ComparisonFactory(
                campaign=campaign, prompt=prompt, response_a=first, response_b=second, overlap=3
            )
            truth[comparison.pk] = Choice.FIRST if first == own else Choice.SECOND
    comparisons_simulate(
        oracle_name="on-topic-shorter", count=10**9, seed=0, campaign=campaign, flips=[0.1] * 5
    )
    served = {base: Served(base, base)}
    one = engine_estimate_gb(Served(base, base), "vllm", gpu=False)
    server = server_make(host="127.0.0.1", port=0, resolve=served.get, engine="vllm", memory_gb=one * 1.5)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    settings.PREFLOOP_ARENA_URL = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        judge = judge_register(name="smollm2", policy=policy)
        judged = judge_campaign(judge=judge, campaign=campaign)
        agreement = judge_agreement_with_people(judge=judge, campaign=campaign)
        verdicts = list(AIVerdict.objects.filter(judge=judge))
        votes = {v.comparison_id: [(judge.pk, v.choice)] for v in verdicts}
        fitted = comparisons_reliability(
            comparisons=export_comparisons(campaign=campaign, split="train", kinds=("train", "gold")),
            ai_votes=votes,
        )
        route = judge_route(judge=judge, campaign=campaign)
    finally:
        server.shutdown()
        server.server_close()
        server.engines.close()
    right = sum(v.choice == truth[v.comparison_id] for v in verdicts)
    people = [r for k, r in fitted.annotators.items() if k > 0]
    low, high = agreement.kappa_interval or (float("nan"), float("nan"))
    shown_first = [r["probability_shown_first"] for v in verdicts for r in v.readings]
    print(f"{len(truth)} pairs, {judged} judged by smollm2 in both orders")
    print(
        f"kappa against the people's majority: {agreement.kappa if agreement.kappa is not None else float('nan'):.2f} "
        f"[{low:.2f}, {high:.2f}] on {agreement.compared} pairs; same verdict in both orders: "
        f"{agreement.consistency:.0%}; calibration error: {agreement.calibration_error:.2f}"
    )
    print(
        f"right against the truth (the answer to the prompt itself): {right} of {len(verdicts)}; the answer "
        f"shown first preferred in {sum(p >= 0.5 for p in shown_first)} of {len(shown_first)} readings"
    )
    print(
        f"Dawid-Skene reliability: smollm2 {fitted.annotators.get(-judge.pk, float('nan')):.2f}, the people "
        f"{min(people):.2f}-{max(people):.2f}"
    )
    print(f"routing: {route.lowered} pairs lowered, {route.kept} kept and served first")
    print("one reading:", json.dumps(verdicts[0].readings[0])[:300])


if __name__ == "__main__":
    main()
