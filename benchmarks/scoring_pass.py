"""What the transformers backend's second scoring pass cost, before mean log-probs were taken while
decoding: one forward over every finished sequence (``make demo``'s batch: 36 answers of up to 320
tokens to prompts of about 40), chunked as it was (``LOGPROB_CHUNK_ELEMENTS`` logits at a time), on
the embedded SmolLM2 in float32; beside it, what taking them while decoding adds to one decoding
step (a log-softmax over the vocabulary and a gather, for every row).

    python benchmarks/scoring_pass.py
    python benchmarks/scoring_pass.py --rows 36 --prompt 40 --answer 320
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=36)
    parser.add_argument("--prompt", type=int, default=40)
    parser.add_argument("--answer", type=int, default=320)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    import torch
    import torch.nn.functional as F

    from generation.backends import ModelSpec
    from generation.backends.transformers import LOGPROB_CHUNK_ELEMENTS, TransformersBackend
    from generation.embedded import embedded_materialise

    backend = TransformersBackend(ModelSpec(str(embedded_materialise())))
    model, vocab = backend.model, backend.model.config.vocab_size
    torch.manual_seed(0)
    width = args.prompt + args.answer
    sequences = torch.randint(100, vocab, (args.rows, width))
    rows = max(1, LOGPROB_CHUNK_ELEMENTS // ((args.answer + 1) * vocab))
    started = time.perf_counter()
    with torch.inference_mode():
        for start in range(0, args.rows, rows):
            chunk = sequences[start : start + rows]
            logits = (
                model(input_ids=chunk, use_cache=False, logits_to_keep=args.answer + 1).logits[:, :-1].float()
            )
            F.cross_entropy(logits.transpose(1, 2), chunk[:, args.prompt :], reduction="none")
    scoring = time.perf_counter() - started
    scores = torch.randn(args.rows, vocab)
    started = time.perf_counter()
    for _ in range(args.answer):
        torch.log_softmax(scores, dim=-1).gather(1, torch.zeros(args.rows, 1, dtype=torch.long))
    meter = time.perf_counter() - started
    print(
        f"{args.rows} sequences of {args.prompt}+{args.answer} tokens, {os.cpu_count()} cores: the scoring pass "
        f"{scoring:.1f} s; the log-probs taken while decoding, {args.answer} steps: {meter:.2f} s in all"
    )
    print(f"(python benchmarks/scoring_pass.py {' '.join(sys.argv[1:])})")


if __name__ == "__main__":
    main()
