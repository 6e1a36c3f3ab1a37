"""DPO training speed and memory: prefloop's trainer against TRL's DPOTrainer, same data and settings.

    python benchmarks/dpo.py                      # CPU: the embedded SmolLM2 in float32
    python benchmarks/dpo.py --model llama-1b     # GPU: a Llama-3.2-1B-shaped random model in bf16

Each trainer runs in its own process (so peak memory is its own) over the same synthetic pairs of
exactly --prompt-tokens + --response-tokens tokens, for one epoch. Reported: tokens/s per step (the
non-padding tokens of the [chosen; rejected] batch, per second of optimizer step), time for the epoch
with the reference pass included, and peak memory (CPU: max RSS; GPU: max allocated). TRL runs twice:
with a live reference model (its default) and with precomputed reference log-probs.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

WORDS = (
    "the model answers every question with care and a short clear sentence about the topic at hand "
    "while the reader follows each step of the reasoning toward a useful result"
).split()


def synthetic_pairs(tokenizer, n: int, prompt_tokens: int, response_tokens: int, seed: int) -> list[dict]:
    """Standard-format pairs whose prompt and responses tokenise to exactly the asked lengths."""
    rng = random.Random(seed)

    def text(length: int) -> str:
        ids: list[int] = []
        while len(ids) < length:
            ids = tokenizer(text=" ".join(rng.choice(WORDS) for _ in range(length * 2)))["input_ids"]
        return tokenizer.decode(ids[:length])

    # responses get one token less: the EOS the trainers append is the last response token
    return [
        {
            "prompt": text(prompt_tokens),
            "chosen": " " + text(response_tokens - 2),
            "rejected": " " + text(response_tokens - 2),
        }
        for _ in range(n)
    ]


def model_dir(name: str, workdir: Path) -> str:
    if name == "embedded":
        from generation.embedded import embedded_materialise

        return str(embedded_materialise())
    if name == "llama-1b":  # Llama-3.2-1B's shape, random weights, the embedded tokenizer
        import torch
        from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

        from generation.embedded import embedded_materialise

        target = workdir / "llama-1b"
        if not (target / "config.json").exists():
            tokenizer = AutoTokenizer.from_pretrained(embedded_materialise())
            config = LlamaConfig(
                vocab_size=len(tokenizer),
                hidden_size=2048,
                intermediate_size=8192,
                num_hidden_layers=16,
                num_attention_heads=32,
                num_key_value_heads=8,
                max_position_embeddings=4096,
                tie_word_embeddings=True,
                rope_theta=500000.0,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
            LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(target)
            tokenizer.save_pretrained(target)
        return str(target)
    return name


def peak_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_ours(args: argparse.Namespace, data: Path, out: Path) -> dict:
    from training.dpo import DPOConfig, train

    steps: list[dict] = []
    result = train(
        DPOConfig(
            policy_path=args.model_path,
            data_path=str(data),
            output_dir=str(out),
            batch_size=args.batch_size,
            epochs=1,
            lr=5e-7,
            dtype=args.dtype,
            save_steps=10**9,
            max_length=4096,
        ),
        on_metrics=steps.append,
    )
    epoch = result.reference_seconds + result.train_seconds
    per_step = sorted(m["tokens/s"] for m in steps[1:] or steps)  # the first step warms up
    return {
        "tokens_per_s": per_step[len(per_step) // 2],
        "epoch_s": epoch,
        "steps": len(steps),
        "reference_s": result.reference_seconds,
        "steps_s": result.train_seconds,
    }


def run_trl(args: argparse.Namespace, data: Path, out: Path, precompute: bool) -> dict:
    import datasets
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig as TRLConfig
    from trl import DPOTrainer

    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    step_times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_times.append(time.perf_counter() - self.t)

    tokenizer = AutoTokenizer.from_pretrained(args.model_path)
    trl_args = TRLConfig(
        output_dir=str(out),
        learning_rate=5e-7,
        per_device_train_batch_size=args.batch_size,
        num_train_epochs=1,
        bf16=args.dtype == "bf16",
        gradient_checkpointing=False,
        report_to=[],
        logging_steps=1,
        save_strategy="no",
        use_cpu=not torch.cuda.is_available(),
        precompute_ref_log_probs=precompute,
        max_length=4096,
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(args.model_path, dtype=dtype),
        args=trl_args,
        train_dataset=datasets.load_dataset("json", data_files=str(data), split="train"),
        processing_class=tokenizer,
        callbacks=[Timer()],
    )
    epoch = trainer.train().metrics["train_runtime"]  # includes TRL's reference pass when precomputed
    tokens_per_step = 2 * args.batch_size * (args.prompt_tokens + args.response_tokens)
    per_step = sorted(tokens_per_step / t for t in (step_times[1:] or step_times))
    return {"tokens_per_s": per_step[len(per_step) // 2], "epoch_s": epoch, "steps": len(step_times)}


def child(args: argparse.Namespace) -> None:
    work = Path(args.workdir)
    data = work / "pairs.jsonl"
    out = Path(tempfile.mkdtemp(dir=work, prefix=args.child + "-"))
    if args.child == "ours":
        result = run_ours(args, data, out)
    else:
        result = run_trl(args, data, out, precompute=args.child == "trl-precomputed")
    result["peak_mb"] = peak_memory_mb()
    print("RESULT " + json.dumps(result))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded", help="embedded | llama-1b | a model directory")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--response-tokens", type=int, default=128)
    p.add_argument(
        "--dtype", choices=["fp32", "bf16"], default=None, help="default: bf16 on a GPU, else fp32"
    )
    p.add_argument("--only", choices=["ours", "trl-live", "trl-precomputed"], action="append")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    import torch
    from transformers import AutoTokenizer

    args.dtype = args.dtype or ("bf16" if torch.cuda.is_available() else "fp32")
    work = Path(tempfile.mkdtemp(prefix="prefloop-bench-dpo-"))
    model_path = model_dir(args.model, work)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    rows = synthetic_pairs(tokenizer, args.pairs, args.prompt_tokens, args.response_tokens, seed=0)
    (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"command: python benchmarks/dpo.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"model: {args.model} ({model_path}), {args.dtype}, device: {device}")
    print(
        f"data: {args.pairs} pairs, batch {args.batch_size}, prompt {args.prompt_tokens} + response "
        f"{args.response_tokens} tokens; torch {torch.__version__}"
    )
    results = {}
    for name in args.only or ["ours", "trl-live", "trl-precomputed"]:
        command = [
            sys.executable,
            __file__,
            "--child",
            name,
            "--workdir",
            str(work),
            "--model-path",
            model_path,
            "--batch-size",
            str(args.batch_size),
            "--prompt-tokens",
            str(args.prompt_tokens),
            "--response-tokens",
            str(args.response_tokens),
            "--dtype",
            args.dtype,
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{done.stderr[-2000:]}")
            continue
        results[name] = json.loads(line[len("RESULT ") :])
    print(f"{'trainer':<18}{'tokens/s (step)':>16}{'epoch s (incl. ref)':>21}{'peak MB':>10}")
    for name, r in results.items():
        print(f"{name:<18}{r['tokens_per_s']:>16.0f}{r['epoch_s']:>21.1f}{r['peak_mb']:>10.0f}")
    if "ours" in results:
        r = results["ours"]
        print(
            f"ours: reference pass {r['reference_s']:.1f} s, {r['steps']} optimizer steps {r['steps_s']:.1f} s"
        )


if __name__ == "__main__":
    main()
