"""DPO training speed and memory: prefloop's trainer against TRL's DPOTrainer, same data and settings.

    python benchmarks/dpo.py --shape realistic    # CPU: the embedded SmolLM2 in float32
    python benchmarks/dpo.py --shape equal        # today's case: every pair 64 + 128 tokens
    python benchmarks/dpo.py --model llama-1b     # GPU: a Llama-3.2-1B-shaped random model in bf16
                                                  # (benchmarks/gpu.sh runs the GPU set)

Shapes (pairs built deterministically from --seed):
- ``realistic``: prompts of 20-1,000 tokens and responses of 10-1,000, log-uniform (lengths that
  vary a hundredfold, as chat data does), chosen and rejected of different lengths;
- ``equal``: every prompt exactly --prompt-tokens, every response --response-tokens.

Each trainer runs in its own process (so peak memory is its own), one epoch. Reported: tokens/s (the
non-padding tokens of the epoch's [chosen; rejected] rows per second of optimizer steps), the epoch
time with the reference pass included, and peak memory (CPU: max RSS; GPU: max allocated). TRL runs
at its best setting (precomputed reference log-probs; its DPO padding-free mode is disabled in 1.16)
and, with ``--only trl-live``, with a live reference model (its default). The last line compares ours
with TRL's faster run. On a GPU, MFU is 6 x parameters x tokens per second of our optimizer steps
over the chip's dense bf16 peak (--peak-tflops).
"""

from __future__ import annotations

import argparse
import json
import math
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


def _text(tokenizer, rng: random.Random, length: int) -> str:
    ids: list[int] = []
    while len(ids) < length:
        ids = tokenizer(text=" ".join(rng.choice(WORDS) for _ in range(length * 2)))["input_ids"]
    return tokenizer.decode(ids[:length])


def synthetic_pairs(tokenizer, n: int, prompt_tokens: int, response_tokens: int, seed: int) -> list[dict]:
    """Standard-format pairs whose prompt and responses tokenise to about the asked lengths."""
    rng = random.Random(seed)
    # responses get one token less: the EOS the trainers append is the last response token
    return [
        {
            "prompt": _text(tokenizer, rng, prompt_tokens),
            "chosen": " " + _text(tokenizer, rng, response_tokens - 2),
            "rejected": " " + _text(tokenizer, rng, response_tokens - 2),
        }
        for _ in range(n)
    ]


def _log_uniform(rng: random.Random, low: int, high: int) -> int:
    return round(math.exp(rng.uniform(math.log(low), math.log(high))))


def realistic_pairs(tokenizer, n: int, seed: int) -> list[dict]:
    """Prompts of 20-1,000 tokens, chosen and rejected each of 10-1,000, drawn log-uniformly."""
    rng = random.Random(seed)
    return [
        {
            "prompt": _text(tokenizer, rng, _log_uniform(rng, 20, 1000)),
            "chosen": " " + _text(tokenizer, rng, max(1, _log_uniform(rng, 10, 1000) - 2)),
            "rejected": " " + _text(tokenizer, rng, max(1, _log_uniform(rng, 10, 1000) - 2)),
        }
        for _ in range(n)
    ]


def epoch_tokens(model_path: str, data: Path) -> tuple[int, int, list[int]]:
    """(non-padding tokens of the epoch's rows, parameters, row lengths), as our trainer tokenises."""
    from transformers import AutoConfig, AutoTokenizer

    from training.dpo.data import pairs_read, pairs_tokenize

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    pairs = pairs_tokenize(tokenizer, pairs_read(data), max_length=4096, max_prompt_length=None)
    lengths = [len(p.prompt_ids) + len(r) for p in pairs for r in (p.chosen_ids, p.rejected_ids)]
    config = AutoConfig.from_pretrained(model_path)
    h, layers, vocab = config.hidden_size, config.num_hidden_layers, config.vocab_size
    kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or h // config.num_attention_heads
    attention = h * (config.num_attention_heads * head_dim) * 2 + h * kv * head_dim * 2
    mlp = 3 * h * config.intermediate_size
    params = layers * (attention + mlp) + vocab * h  # the matmul parameters, head included
    return sum(lengths), params, lengths


def model_dir(name: str, workdir: Path) -> str:
    if name == "embedded":
        from generation.embedded import embedded_materialise

        return str(embedded_materialise())
    if name in ("llama-1b", "llama-8b"):  # real shapes, random weights, 128k vocabulary
        from benchmarks.gpu_models import models_write

        models_write(workdir)
        return str(workdir / name)
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
            padding_free=not args.no_padding_free,
            gradient_checkpointing=args.gradient_checkpointing,
            compile=args.compile,
            lora_r=args.lora_r,
        ),
        on_metrics=steps.append,
    )
    return {
        "tokens_per_s": args.tokens / result.train_seconds,
        "epoch_s": result.reference_seconds + result.train_seconds,
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
    return {"tokens_per_s": args.tokens / sum(step_times), "epoch_s": epoch, "steps": len(step_times)}


def child(args: argparse.Namespace) -> None:
    work = Path(args.workdir)
    data = work / "pairs.jsonl"
    out = Path(tempfile.mkdtemp(dir=work, prefix=args.child + "-"))
    if args.child in OURS:
        args.gradient_checkpointing = args.gradient_checkpointing or args.child == "ours-checkpointing"
        result = run_ours(args, data, out)
    else:
        result = run_trl(args, data, out, precompute=args.child == "trl-precomputed")
    result["peak_mb"] = peak_memory_mb()
    print("RESULT " + json.dumps(result))


# ours as configured by the flags (the trainer's defaults unless told), and ours with gradient
# checkpointing (the memory-lean setting)
OURS = ("ours", "ours-checkpointing")
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense bf16


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded", help="embedded | llama-1b | llama-8b | a model directory")
    p.add_argument("--shape", choices=["realistic", "equal"], default="realistic")
    p.add_argument("--pairs", type=int, default=16)
    p.add_argument("--batch-size", type=int, help="pairs per step (default: 2 realistic, 4 equal)")
    p.add_argument("--prompt-tokens", type=int, default=64, help="equal shape: every prompt's length")
    p.add_argument("--response-tokens", type=int, default=128, help="equal shape: every response's length")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--dtype", choices=["fp32", "bf16"], default=None, help="default: bf16 on a GPU, else fp32"
    )
    p.add_argument("--only", choices=[*OURS, "trl-live", "trl-precomputed"], action="append")
    p.add_argument("--no-padding-free", action="store_true", help="ours: padded rows")
    p.add_argument("--gradient-checkpointing", action="store_true", help="ours: recompute activations")
    p.add_argument("--compile", action="store_true", help="ours: torch.compile the decoder layers")
    p.add_argument("--lora-r", type=int, default=0, help="ours: LoRA rank (0: full fine-tuning)")
    p.add_argument("--peak-tflops", type=float, help="the chip's dense bf16 peak, for MFU (GPU)")
    p.add_argument("--write-pairs", help="write the shape's pairs to this JSONL file and stop")
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--model-path", help=argparse.SUPPRESS)
    p.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args)
        return

    import torch
    from transformers import AutoTokenizer

    args.dtype = args.dtype or ("bf16" if torch.cuda.is_available() else "fp32")
    args.batch_size = args.batch_size or (2 if args.shape == "realistic" else 4)
    work = Path(tempfile.mkdtemp(prefix="prefloop-bench-dpo-"))
    model_path = model_dir(args.model, work)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if args.shape == "realistic":
        rows = realistic_pairs(tokenizer, args.pairs, seed=args.seed)
    else:
        rows = synthetic_pairs(
            tokenizer, args.pairs, args.prompt_tokens, args.response_tokens, seed=args.seed
        )
    (work / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if args.write_pairs:
        Path(args.write_pairs).write_text(
            (work / "pairs.jsonl").read_text(encoding="utf-8"), encoding="utf-8"
        )
        return
    tokens, params, lengths = epoch_tokens(model_path, work / "pairs.jsonl")

    on_gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name(0) if on_gpu else f"CPU ({os.cpu_count()} cores)"
    print(f"command: python benchmarks/dpo.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"model: {args.model} ({model_path}), {args.dtype}, device: {device}")
    import transformers
    import trl

    print(
        f"data: {args.shape} shape, {args.pairs} pairs, batch {args.batch_size}, rows of "
        f"{min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), {tokens} tokens in "
        f"the epoch; torch {torch.__version__}, transformers {transformers.__version__}, TRL {trl.__version__}"
    )
    ours_flags = [
        flag
        for flag, on in (
            ("--no-padding-free", args.no_padding_free),
            ("--compile", args.compile),
            ("--gradient-checkpointing", args.gradient_checkpointing),
        )
        if on
    ]
    results = {}
    for name in args.only or [*OURS, "trl-precomputed"]:
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
            "--dtype",
            args.dtype,
            "--tokens",
            str(tokens),
            "--lora-r",
            str(args.lora_r),
            *(ours_flags if name in OURS else []),
        ]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
        if line is None:
            print(f"{name}: failed\n{done.stderr[-2000:]}")
            continue
        results[name] = json.loads(line[len("RESULT ") :])
    print(f"{'trainer':<18}{'tokens/s':>10}{'epoch s (incl. ref)':>21}{'peak MB':>10}")
    for name, r in results.items():
        print(f"{name:<18}{r['tokens_per_s']:>10.0f}{r['epoch_s']:>21.1f}{r['peak_mb']:>10.0f}")
    for name in (n for n in OURS if n in results):
        r = results[name]
        print(
            f"{name}: reference pass {r['reference_s']:.1f} s, {r['steps']} optimizer steps {r['steps_s']:.1f} s"
        )
        peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
        if on_gpu and peak:
            mfu = 6 * params * r["tokens_per_s"] / (peak * 1e12)
            print(
                f"{name}: MFU {100 * mfu:.1f}% (6 x {params / 1e9:.2f}B parameters x tokens/s over {peak:.0f} TFLOP/s)"
            )
    trl_runs = [results[k] for k in ("trl-precomputed", "trl-live") if k in results]
    ran = [n for n in reversed(OURS) if n in results]  # the plain setting's line last
    if ran and trl_runs:
        best = min(trl_runs, key=lambda r: r["epoch_s"])
        for name in ran:
            label = "ours" if name == "ours" else f"ours ({name.removeprefix('ours-').replace('-', ' ')})"
            print(
                f"{label} vs trl: epoch time {best['epoch_s'] / results[name]['epoch_s']:.2f}x faster, "
                f"peak memory {results[name]['peak_mb'] / best['peak_mb']:.2f}x"
            )


if __name__ == "__main__":
    main()
