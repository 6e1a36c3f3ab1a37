"""A LoRA round of the embedded SmolLM2 as our trainer makes one, small enough for a test: SFT on one
answer to one question (rank 8, merged copy beside). The vLLM engine tests and benchmarks/engines.py
serve such rounds."""

from pathlib import Path

from tests.training.dpo.conftest import write_jsonl

COLOUR = [{"role": "user", "content": "Name a primary colour."}]


def lora_round(base: str, answer: str, out: Path, *, seed: int = 0) -> tuple[str, str]:
    """Train a LoRA round of ``base`` in ``out`` that answers COLOUR with ``answer``: (adapter, merged)."""
    from training.dpo import DPOConfig, train

    out.mkdir(parents=True, exist_ok=True)
    rows = [{"prompt": COLOUR, "completion": [{"role": "assistant", "content": answer}]}]
    result = train(
        DPOConfig(
            policy_path=base,
            data_path=str(write_jsonl(out / "sft.jsonl", rows)),
            output_dir=str(out / "round"),
            loss="sft",
            lr=3e-3,
            lora_r=8,
            merge=True,
            batch_size=1,
            epochs=6,
            max_length=64,
            save_steps=10**9,
            dtype="fp32",
            seed=seed,
        )
    )
    return str(result.final_dir), str(result.merged_dir)
