"""The trainer on the real embedded SmolLM2 (materialised once under var/models): a short run."""

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from generation.embedded import embedded_materialise
from tests.training.dpo.conftest import write_jsonl
from training.dpo import DPOConfig, train


@pytest.mark.slow
def test_dpo_step_on_smollm2_saves_a_model_that_reloads_and_generates(tmp_path):
    model_dir = embedded_materialise()
    rows = [
        {
            "prompt": [{"role": "user", "content": "What is 2 + 2?"}],
            "chosen": [{"role": "assistant", "content": "4."}],
            "rejected": [{"role": "assistant", "content": "It is 5, I think."}],
        },
        {
            "prompt": [{"role": "user", "content": "Name a primary colour."}],
            "chosen": [{"role": "assistant", "content": "Red."}],
            "rejected": [{"role": "assistant", "content": "Purple is a primary colour."}],
        },
    ]
    data = write_jsonl(tmp_path / "pairs.jsonl", rows)
    seen = []

    result = train(
        DPOConfig(
            policy_path=str(model_dir),
            data_path=str(data),
            output_dir=str(tmp_path / "run"),
            lr=1e-5,
            batch_size=2,
            epochs=2,
            max_length=64,
            save_steps=10**9,
            dtype="fp32",
        ),
        on_metrics=seen.append,
    )

    assert len(seen) == 2
    assert abs(seen[0]["rewards/margins"]) < 1e-3  # the first step starts at the reference
    assert seen[1]["rewards/margins"] > seen[0]["rewards/margins"]
    tokenizer = AutoTokenizer.from_pretrained(result.final_dir)
    model = AutoModelForCausalLM.from_pretrained(result.final_dir)
    prompt = tokenizer.apply_chat_template(
        rows[0]["prompt"], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    with torch.no_grad():
        out = model.generate(**prompt, max_new_tokens=8, do_sample=False)
    answer = tokenizer.decode(out[0][prompt["input_ids"].shape[1] :], skip_special_tokens=True)
    assert answer.strip()
