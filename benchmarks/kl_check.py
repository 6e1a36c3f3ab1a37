"""One held-out KL check of the early stop (training/dpo/kl.py) on the embedded SmolLM2, timed by part.

    python benchmarks/kl_check.py [--prompts 60] [--max-new-tokens 48]

The bundled loop's held-out prompts (training/demo/loop_prompts.jsonl, split eval), one answer each,
temperature 0.8 and top-p 0.95 as a round samples them. Rows: drawing the answers with the
generation backend's sampler (what a check does), drawing them with transformers' own sampler
(``do_sample=True``: the naive way, a full sort of the vocabulary every token), and scoring them
under the policy and the reference. The reference here is the model itself (a check at step 0:
the estimate is 0). Loading excluded; the last line gives the sampler's speed-up.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prompts", type=int, default=60)
    p.add_argument("--max-new-tokens", type=int, default=48)
    args = p.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from benchmarks.dpo import model_dir
    from generation.backends.transformers import stop_ids
    from training.dpo import kl

    path = model_dir("embedded", Path("/tmp/prefloop-bench-models"))
    rows = [json.loads(line) for line in (ROOT / "training/demo/loop_prompts.jsonl").read_text().splitlines()]
    prompts = [[{"role": "user", "content": r["prompt"]}] for r in rows if r.get("split") == "eval"]
    prompts = prompts[: args.prompts]
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    device = torch.device("cpu")
    rendered = kl.prompts_render(tokenizer, prompts, max_prompt_length=512)
    common = {"pad_id": tokenizer.pad_token_id, "stop_ids": stop_ids(model, tokenizer), "device": device}
    print(f"$ python benchmarks/kl_check.py --prompts {args.prompts} --max-new-tokens {args.max_new_tokens}")
    print(f"{len(prompts)} held-out prompts, {torch.get_num_threads()} threads, torch {torch.__version__}")

    started = time.perf_counter()
    answers, drawn = kl.answers_sample(
        model, rendered, temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0, **common
    )
    ours = time.perf_counter() - started
    tokens = sum(len(a) for a in answers)
    print(f"draw, the backend's sampler       {ours:6.1f} s  {tokens} tokens  {tokens / ours:6.1f} tokens/s")

    started = time.perf_counter()
    naive_tokens = 0
    with torch.no_grad():
        for start in range(0, len(rendered), 16):
            chunk = rendered[start : start + 16]
            width = max(len(r) for r in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id)
            mask = torch.zeros_like(ids)
            for row, r in enumerate(chunk):
                ids[row, width - len(r) :], mask[row, width - len(r) :] = torch.tensor(r), 1
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                do_sample=True,
                temperature=0.8,
                top_p=0.95,
                top_k=0,
                max_new_tokens=args.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=common["stop_ids"],
            )
            naive_tokens += int((out[:, width:] != tokenizer.pad_token_id).sum())
    naive = time.perf_counter() - started
    print(
        f"draw, transformers' sampler       {naive:6.1f} s  {naive_tokens} tokens  {naive_tokens / naive:6.1f} tokens/s"
    )

    scoring = {k: common[k] for k in ("pad_id", "device")}
    started = time.perf_counter()
    reference = kl.answers_logps(model, rendered, answers, **scoring)
    scored = time.perf_counter() - started
    estimate = kl.kl_per_token(drawn, reference)
    print(f"score under the reference         {scored:6.1f} s  (estimate {estimate:.4f})")
    started = time.perf_counter()
    again = kl.answers_logps(model, rendered, answers, **scoring)
    second = time.perf_counter() - started
    gap = (again - drawn).abs().max().item()
    print(f"score under the policy again      {second:6.1f} s  (largest gap to the drawing's: {gap:.1e})")
    naive_check = naive + 2 * scored
    print(
        f"a check: {ours + scored:.1f} s, against {naive_check:.1f} s drawn with transformers' sampler and "
        f"scored twice ({naive_check / (ours + scored):.2f}x); the backend's sampler per token: "
        f"{(naive / naive_tokens) / (ours / tokens):.2f}x"
    )


if __name__ == "__main__":
    main()
