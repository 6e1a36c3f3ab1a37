"""The early stop on a held-out KL estimate: checks, the stop, the weights kept."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from tests.training.dpo.conftest import write_jsonl
from training.dpo import DPOConfig, train
from training.dpo import loop as loop_module
from training.dpo.kl import kl_per_token, prompts_read

HELD_OUT = ["what is the capital of spain?", "name a fruit", "say something kind", "goodbye"] * 4


@pytest.fixture
def heldout_prompts(tmp_path):
    return write_jsonl(tmp_path / "heldout.jsonl", [{"prompt": p} for p in HELD_OUT])


def config(model_dir, data, out, prompts, **overrides):
    settings = {
        "lr": 5e-2,
        "epochs": 3,
        "batch_size": 4,
        "seed": 0,
        "kl_every": 2,
        "kl_budget": 100.0,
        "kl_prompts_path": str(prompts),
        "kl_max_new_tokens": 16,
    } | overrides
    return DPOConfig(policy_path=str(model_dir), data_path=str(data), output_dir=str(out), **settings)


def weights(directory):
    return load_file(str(directory / "model.safetensors"))


def assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)


def test_kl_per_token_is_the_mean_of_each_answers_log_prob_difference():
    # answer 1: policy -1.0, reference -1.5 per token; answer 2: -2.0 against -2.2
    assert kl_per_token(torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -2.2])).item() == pytest.approx(0.35)


def test_the_checks_are_logged_and_leave_the_training_as_it_was(
    plain_model_dir, standard_pairs, heldout_prompts, tmp_path
):
    seen = []
    checked = train(
        config(plain_model_dir, standard_pairs, tmp_path / "checked", heldout_prompts), on_metrics=seen.append
    )
    plain = train(
        DPOConfig(
            policy_path=str(plain_model_dir),
            data_path=str(standard_pairs),
            output_dir=str(tmp_path / "plain"),
            lr=5e-2,
            epochs=3,
            batch_size=4,
            seed=0,
        )
    )

    assert [step for step, _ in checked.kl_checks] == [2, 4, 6]
    assert [m["step"] for m in seen if "eval/kl" in m] == [2, 4, 6]
    assert all(estimate > 0 for _, estimate in checked.kl_checks)  # lr 5e-2 moves a tiny model far
    assert checked.kl_stop is None and checked.steps == 6
    # sampling for the estimate draws from its own RNG: the run trains exactly as without the checks
    assert_same_weights(weights(checked.final_dir), weights(plain.final_dir))


def test_a_budget_passed_at_the_first_check_keeps_the_starting_weights(
    plain_model_dir, standard_pairs, heldout_prompts, tmp_path
):
    result = train(config(plain_model_dir, standard_pairs, tmp_path / "run", heldout_prompts, kl_budget=1e-9))

    assert result.steps == 2
    assert result.kl_stop["step"] == 2 and result.kl_stop["kept_step"] == 0
    assert result.kl_stop["kl"] > 1e-9
    assert_same_weights(weights(result.final_dir), weights(plain_model_dir))
    assert [p.name for p in (tmp_path / "run").glob("checkpoint-*")] == ["checkpoint-0"]


def test_a_budget_passed_later_keeps_the_last_checkpoint_within_it(
    plain_model_dir, standard_pairs, heldout_prompts, tmp_path, monkeypatch
):
    probe = train(config(plain_model_dir, standard_pairs, tmp_path / "probe", heldout_prompts))
    (_, at_2), (_, at_4), _ = probe.kl_checks
    assert at_4 > at_2  # the tiny model moves further with every step at lr 1e-2
    saved = {}
    original = loop_module.checkpoint_save

    def keeping_a_copy(output_dir, *, step, **kwargs):
        path = original(output_dir, step=step, **kwargs)
        saved[step] = shutil.copytree(path, tmp_path / f"copy-{step}")
        return path

    monkeypatch.setattr(loop_module, "checkpoint_save", keeping_a_copy)
    budget = (at_2 + at_4) / 2
    result = train(
        config(plain_model_dir, standard_pairs, tmp_path / "run", heldout_prompts, kl_budget=budget)
    )

    assert result.kl_stop == {"step": 4, "kl": pytest.approx(at_4), "budget": budget, "kept_step": 2}
    assert sorted(saved) == [0, 2]
    assert_same_weights(weights(result.final_dir), weights(saved[2]))
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert '"kl_stop"' in lines[-1]


def test_with_lora_the_reference_is_the_base_and_the_start_is_an_untrained_adapter(
    chat_model_dir, conversational_pairs, heldout_prompts, tmp_path
):
    result = train(
        config(
            chat_model_dir,
            conversational_pairs,
            tmp_path / "run",
            heldout_prompts,
            lora_r=4,
            lr=0.2,
            kl_every=4,
            kl_budget=1e-9,
        )
    )

    assert result.kl_stop["kept_step"] == 0
    adapter = load_file(str(result.final_dir / "adapter_model.safetensors"))
    assert all(t.abs().max() == 0 for name, t in adapter.items() if "lora_B" in name)  # B starts at zero


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"kl_every": 2}, "kl_every needs kl_budget > 0 and kl_prompts_path"),
        ({"kl_every": 2, "kl_budget": 0.1, "kl_prompts_path": "p.jsonl", "sharding": "fsdp"}, "not fsdp"),
        ({"kl_every": -1}, "kl_every must be >= 0"),
    ],
)
def test_early_stop_settings_are_checked(overrides, message):
    with pytest.raises(ValueError, match=message):
        DPOConfig(policy_path="m", data_path="d", output_dir="o", **overrides)


def test_bad_held_out_prompt_lines_are_all_named(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = ['{"prompt": "fine"}', "not json", '{"prompt": ""}', '{"text": "x"}']
    lines.append('{"prompt": [{"role": "robot", "content": "hi"}]}')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(ValueError) as raised:
        prompts_read(str(path))
    message = str(raised.value)
    assert "4 bad line(s)" in message
    assert "prompts.jsonl:2: not valid JSON" in message
    assert "prompts.jsonl:3: 'prompt' must be a non-empty string or list of messages" in message
    assert "prompts.jsonl:4: 'prompt' must be" in message
    assert "prompts.jsonl:5: 'prompt'[0].role must be system, user or assistant" in message


def test_the_log_probs_taken_while_drawing_are_the_answers_log_probs(plain_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from generation.backends.transformers import stop_ids
    from training.dpo import kl

    tokenizer = AutoTokenizer.from_pretrained(plain_model_dir)
    model = AutoModelForCausalLM.from_pretrained(plain_model_dir).eval()
    rendered = kl.prompts_render(tokenizer, HELD_OUT, max_prompt_length=32)
    common = {"pad_id": tokenizer.pad_token_id or 0, "device": torch.device("cpu")}
    stop = stop_ids(model, tokenizer)
    answers, drawn = kl.answers_sample(
        model, rendered, stop_ids=stop, temperature=0.8, top_p=0.95, max_new_tokens=12, seed=3, **common
    )

    assert len(answers) == len(HELD_OUT) and all(1 <= len(a) <= 12 for a in answers)
    torch.testing.assert_close(drawn, kl.answers_logps(model, rendered, answers, **common), atol=1e-4, rtol=0)
