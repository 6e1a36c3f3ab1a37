"""Generation throughput of the transformers backend: batched against one prompt at a time.

    python benchmarks/generation.py                    # CPU: the embedded SmolLM2, float32
    python benchmarks/generation.py --model llama-1b   # GPU: a Llama-3.2-1B-shaped random model, bf16

32 prompts x 4 samples. Rows:
- "batched": the backend as ``generate`` uses it (prompts sorted by length, as many per ``generate``
  call as fit, each prompt prefilled once and its KV cache repeated for its 4 samples);
- "batched, every sample prefilled": the same without sharing the prefill (the backend before);
- "one prompt at a time": the backend with one prompt (and its 4 samples) per call;
- "naive loop": plain transformers, what a script would do: for each prompt, ``model.generate`` with
  ``do_sample=True, num_return_sequences=4`` and transformers' own temperature/top-p sampling.
tokens/s counts generated tokens; model loading is excluded. The last lines give the speed-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prompts(n: int) -> list[list[dict[str, str]]]:
    lines = (ROOT / "annotate" / "demo" / "prompts.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    base = [r["messages"] if "messages" in r else [{"role": "user", "content": r["prompt"]}] for r in rows]
    out = []
    for i in range(n):  # vary the wording so no two prompts are the same
        conversation = [dict(m) for m in base[i % len(base)]]
        if i >= len(base):
            conversation[-1]["content"] += f" (variant {i // len(base)})"
        out.append(conversation)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded", help="embedded | llama-1b | a model directory")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--skip-naive", action="store_true")
    args = p.parse_args()

    import torch

    from benchmarks.dpo import model_dir
    from generation.backends import ModelSpec, Sampling
    from generation.backends.transformers import TransformersBackend

    path = model_dir(args.model, Path("/tmp/prefloop-bench-models"))
    work = prompts(args.prompts)
    sampling = Sampling(
        samples=args.samples, temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0
    )
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"command: python benchmarks/generation.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"model: {args.model} ({path}), device: {device}, torch {torch.__version__}")
    print(
        f"{args.prompts} prompts x {args.samples} samples, max {args.max_new_tokens} new tokens, T=0.8 top-p 0.95"
    )

    rows = []
    modes = [("batched", None, True), ("batched, every sample prefilled", None, False)]
    if not args.skip_naive:
        modes.append(("one prompt at a time", 1, True))
    for label, batch_size, prefill_once in modes:
        backend = TransformersBackend(ModelSpec(path), batch_size=batch_size, prefill_once=prefill_once)
        backend.generate(work[:1], Sampling(samples=1, max_new_tokens=4))  # warm-up
        started = time.perf_counter()
        results = backend.generate(work, sampling)
        elapsed = time.perf_counter() - started
        tokens = sum(c.token_count for r in results for c in r)
        rows.append((label, elapsed, len(work) / elapsed, tokens / elapsed))
        if not args.skip_naive and batch_size is None and prefill_once:
            naive = naive_loop(backend, work, sampling)
        del backend
    if not args.skip_naive:
        rows.append(naive)
    print(f"{'mode':<34}{'seconds':>9}{'prompts/s':>11}{'tokens/s':>10}")
    for label, elapsed, pps, tps in rows:
        print(f"{label:<34}{elapsed:>9.1f}{pps:>11.3f}{tps:>10.1f}")
    for label, _, _, tps in rows[1:]:
        print(f"batched vs {label} (tokens/s): {rows[0][3] / tps:.1f}x")


def naive_loop(backend, work, sampling) -> tuple[str, float, float, float]:
    """One prompt at a time through plain ``model.generate`` (transformers' sampling)."""
    import torch

    model, tokenizer = backend.model, backend.tokenizer
    torch.manual_seed(sampling.seed)
    tokens = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for conversation in work:
            ids = torch.tensor([backend.render(conversation)], device=backend.device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=None,
                num_return_sequences=sampling.samples,
                max_new_tokens=sampling.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=backend.eos_ids,
            )
            new = out[:, ids.shape[1] :]
            ended = torch.isin(new, torch.tensor(backend.eos_ids, device=new.device))
            # tokens up to and including the first EOS (the rest is padding after the row ended)
            tokens += int(torch.where(ended.any(1), ended.int().argmax(1) + 1, new.shape[1]).sum())
    elapsed = time.perf_counter() - started
    return ("naive loop (plain transformers)", elapsed, len(work) / elapsed, tokens / elapsed)


if __name__ == "__main__":
    main()
