"""The held-out KL estimate a run can stop on (``DPOConfig.kl_every``).

Every ``kl_every`` optimizer steps the policy answers a fixed set of held-out prompts (sampled, a seed
per check) and each answer is scored under the policy and the reference; KL(policy ‖ reference) per
token is the mean over answers of the mean per-token log-prob difference. It is the estimator the
app's drift guard applies to a round's held-out answers (``training/drift.py``), so a run that stops
at the round's KL budget keeps a policy the guard would measure near or within it.

Only token ids cross these functions: prompts are rendered once (chat template for message lists),
answers stay the ids the policy sampled, ended at and including their first EOS.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import LogitsProcessorList

from generation.backends.sampling import NucleusSampler
from generation.backends.transformers import completion_logps
from training.dpo.data import jsonl_read, message_problem

NOT_A_PROMPT = "'prompt' must be a non-empty string or list of messages"


def prompts_read(path: str) -> list[Any]:
    """The prompts of a JSONL file, one ``{"prompt": str | [messages]}`` per line; InvalidInput names
    every bad line and nothing is used."""

    def prompt(number: int, record: Any) -> list[Any] | str:
        value = record.get("prompt") if isinstance(record, dict) else None
        if isinstance(value, list):
            problem = message_problem(value, "prompt", assistant_only=False)
        else:
            problem = None if isinstance(value, str) and value.strip() else NOT_A_PROMPT
        return problem or [value]

    return jsonl_read(path, prompt, nothing="no prompts to estimate the held-out KL on", unused="")


def prompts_render(tokenizer: Any, prompts: list[Any], *, max_prompt_length: int) -> list[list[int]]:
    """Token ids of each prompt as the policy is asked it (message lists through the chat template
    with the generation prompt), keeping the end of a long one."""
    rendered = []
    for prompt in prompts:
        if isinstance(prompt, list):
            ids = tokenizer.apply_chat_template(
                prompt, tokenize=True, add_generation_prompt=True, return_dict=True
            )["input_ids"]
        else:
            ids = tokenizer(text=prompt)["input_ids"]
        rendered.append(list(ids)[-max_prompt_length:])
    return rendered


@torch.no_grad()
def answers_sample(
    causal: Any,
    prompt_ids: list[list[int]],
    *,
    pad_id: int,
    stop_ids: list[int],
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    seed: int,
    device: torch.device,
    batch_size: int = 16,
) -> tuple[list[list[int]], Tensor]:
    """One sampled answer per prompt (its ids up to and including the first EOS, or
    ``max_new_tokens`` of them), drawn with the generation backend's sampler (no Django there), and
    [n] the mean per-token log-prob of each under ``causal`` itself, from the raw logits of the
    decoding steps (no second pass). The global RNG is forked: the training run's draws are untouched."""
    answers: list[list[int]] = []
    means: list[Tensor] = []
    cuda = [device] if device.type == "cuda" else []
    # Drawn as the round's own answers are (the backend's sampler: exact temperature + top-p, greedy
    # over its draw); temperature 0: greedy.
    drawing: dict[str, Any] = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    if temperature > 0:
        drawing["logits_processor"] = LogitsProcessorList(
            [NucleusSampler(temperature=temperature, top_p=top_p)]
        )
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        for start in range(0, len(prompt_ids), batch_size):
            chunk = prompt_ids[start : start + batch_size]
            width = max(len(ids) for ids in chunk)
            ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for row, prompt in enumerate(chunk):  # left padding: every answer starts at column `width`
                ids[row, width - len(prompt) :] = torch.tensor(prompt)
                mask[row, width - len(prompt) :] = 1
            out = causal.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                **drawing,
                max_new_tokens=max_new_tokens,
                pad_token_id=pad_id,
                eos_token_id=stop_ids,
                use_cache=True,
                output_logits=True,
                return_dict_in_generate=True,
            )
            new = out.sequences[:, width:]
            for row in new.tolist():
                ended = next((i for i, token in enumerate(row) if token in stop_ids), None)
                answers.append(row if ended is None else row[: ended + 1])
            lengths = torch.tensor([len(a) for a in answers[-len(chunk) :]], device=new.device)
            token_logps = torch.stack(
                [
                    F.log_softmax(step.float(), dim=-1).gather(1, new[:, t, None]).squeeze(1)
                    for t, step in enumerate(out.logits)
                ],
                dim=1,
            )
            kept = torch.arange(new.shape[1], device=new.device)[None, :] < lengths[:, None]
            means.append(((token_logps * kept).sum(1) / lengths).cpu())
    return answers, torch.cat(means)


def answers_logps(
    causal: Any, prompt_ids: list[list[int]], answers: list[list[int]], *, pad_id: int, device: torch.device
) -> Tensor:
    """[n] mean per-token log-prob of each answer after its prompt under ``causal``, in float32 (the
    backend's scoring pass, on ids)."""
    return completion_logps(causal, list(zip(prompt_ids, answers, strict=True)), pad_id=pad_id, device=device)


def kl_per_token(policy: Tensor, reference: Tensor) -> Tensor:
    """KL(policy ‖ reference) per token from answers the policy sampled: the mean over answers of
    (mean log p_policy − mean log p_reference) of each. Both [n]; a 0-dim tensor."""
    return (policy - reference).mean()
