"""Preference JSONL → token ids → the ``[chosen; rejected]`` batch with a completion mask.

Both shapes that ``export_preferences`` writes are read, as TRL reads them:

- conversational: ``prompt`` a message list, ``chosen``/``rejected`` one assistant message each. The
  model's chat template renders the prompt with the generation prompt, and the prompt plus response;
  the response tokens are what follows the rendered prompt, up to and including the first EOS. (TRL
  also counts what a template writes after the EOS, such as a newline; we stop at the EOS, the token
  the model must learn to emit.)
- standard: plain strings, tokenised as they are; the EOS token is appended to each response.

Truncation (``max_length`` for prompt + response, ``max_prompt_length`` for the prompt): the prompt
keeps its end (the text nearest the answer), the response keeps its start. A prompt longer than
``max_prompt_length`` (default: ``max_length // 2`` when the prompt alone would not leave room for a
response token) is cut from the left; then the response is cut to what remains.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import Tensor

from config.invalid_input import InvalidInput

T = TypeVar("T")


@dataclass(frozen=True)
class Pair:
    line: int
    prompt: Any  # str (standard) or list of messages (conversational)
    chosen: Any
    rejected: Any
    confidence: float | None = None  # P(chosen beats rejected), where the export gave one

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)


@dataclass(frozen=True)
class TokenizedPair:
    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]


@dataclass
class Batch:
    """``input_ids``/``attention_mask``/``completion_mask`` are [2B, T]: rows 0..B-1 the prompts with
    their chosen responses, rows B..2B-1 the same prompts with the rejected ones; right-padded."""

    input_ids: Tensor
    attention_mask: Tensor
    completion_mask: Tensor
    index: Tensor  # [B]: each pair's position in the dataset (to look up reference log-probs)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            input_ids=self.input_ids.to(device),
            attention_mask=self.attention_mask.to(device),
            completion_mask=self.completion_mask.to(device),
            index=self.index,
        )


def message_problem(value: Any, field: str, *, assistant_only: bool) -> str | None:
    if not isinstance(value, list) or not value:
        return f"'{field}' must be a non-empty list of messages"
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("content"), str):
            return f"'{field}'[{i}] must be an object with string 'role' and 'content'"
        if message.get("role") not in ("system", "user", "assistant"):
            return f"'{field}'[{i}].role must be system, user or assistant"
        if assistant_only and message["role"] != "assistant":
            return f"'{field}' must hold assistant messages only"
    if assistant_only and not "".join(m["content"] for m in value).strip():
        return f"'{field}' is empty"
    return None


def _pair_problem(record: Any) -> str | None:
    if not isinstance(record, dict):
        return "expected a JSON object"
    for field in ("prompt", "chosen", "rejected"):
        if field not in record:
            return f"missing field '{field}'"
    prompt, chosen, rejected = record["prompt"], record["chosen"], record["rejected"]
    if isinstance(prompt, list):
        if problem := message_problem(prompt, "prompt", assistant_only=False):
            return problem
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if problem := message_problem(value, field, assistant_only=True):
                return problem
    elif isinstance(prompt, str):
        for field, value in (("chosen", chosen), ("rejected", rejected)):
            if not isinstance(value, str):
                return f"'{field}' must be a string when 'prompt' is a string"
            if not value.strip():
                return f"'{field}' is empty"
    else:
        return "'prompt' must be a string or a list of messages"
    if chosen == rejected:
        return "'chosen' and 'rejected' are identical"
    confidence = record.get("confidence")
    if confidence is not None and (
        isinstance(confidence, bool) or not isinstance(confidence, int | float) or not 0 <= confidence <= 1
    ):
        return "'confidence' must be a number between 0 and 1"
    return None


def _records(path: str | Path, problems: list[str]) -> Iterator[tuple[int, Any]]:
    """(line number, JSON value) of every non-blank line; a line that is not JSON goes to ``problems``."""
    with open(path, encoding="utf-8") as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"{path}:{number}: not valid JSON ({exc.msg})")
            except RecursionError:
                problems.append(f"{path}:{number}: JSON nested too deeply")


def jsonl_read(
    path: str | Path,
    rows: Callable[[int, Any], list[T] | str],
    *,
    nothing: str,
    unused: str = ", nothing trained",
) -> list[T]:
    """The items of a JSONL file, all validated before any is used: ``rows(number, record)`` gives a
    line's items, or the problem with it; one InvalidInput names every bad line (a line that is not
    JSON, a bad record, items that mix conversational and standard shapes), or says ``nothing``."""
    items: list[T] = []
    problems: list[str] = []
    shapes: set[bool] = set()
    for number, record in _records(path, problems):
        parsed = rows(number, record)
        if isinstance(parsed, str):
            problems.append(f"{path}:{number}: {parsed}")
            continue
        for item in parsed:
            shape = getattr(item, "conversational", None)
            if shape is not None:
                if shapes and shape not in shapes:
                    problems.append(f"{path}:{number}: mixes conversational and standard rows in one file")
                    break
                shapes.add(shape)
            items.append(item)
    if problems:
        raise InvalidInput(f"{path}: {len(problems)} bad line(s){unused}\n" + "\n".join(problems))
    if not items:
        raise InvalidInput(f"{path}: {nothing}")
    return items


def pairs_read(path: str | Path) -> list[Pair]:
    """Every pair of a JSONL file, validated; InvalidInput lists every bad line."""

    def pair(number: int, record: Any) -> list[Pair] | str:
        if problem := _pair_problem(record):
            return problem
        return [
            Pair(number, record["prompt"], record["chosen"], record["rejected"], record.get("confidence"))
        ]

    return jsonl_read(path, pair, nothing="no preference pairs")


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _completion_ids(
    tokenizer: Any, pair: Pair, prompt_ids: list[int], response: Any
) -> tuple[int, list[int]]:
    """(where the response starts in the full sequence, the response's ids)."""
    if pair.conversational:
        full = tokenizer.apply_chat_template(pair.prompt + response, tokenize=True, return_dict=True)[
            "input_ids"
        ]
        start = _common_prefix(prompt_ids, full)
        completion = list(full[start:])
        eos = tokenizer.eos_token_id
        if eos in completion:  # stop at the EOS: what a template writes after it is not the answer
            completion = completion[: completion.index(eos) + 1]
        else:
            completion.append(eos)
        return start, completion
    full = tokenizer(text=pair.prompt + response + tokenizer.eos_token)["input_ids"]
    start = _common_prefix(prompt_ids, full)
    return start, list(full[start:])


def pair_tokenize(
    tokenizer: Any, pair: Pair, *, max_length: int, max_prompt_length: int | None
) -> TokenizedPair:
    """Token ids of one pair; see the module docstring for the rules."""
    if tokenizer.eos_token_id is None:
        raise InvalidInput("the tokenizer has no EOS token; responses could not be ended")
    if pair.conversational:
        if not tokenizer.chat_template:
            raise InvalidInput(
                f"line {pair.line}: conversational data needs a tokenizer with a chat template"
            )
        prompt_ids = list(
            tokenizer.apply_chat_template(
                pair.prompt, tokenize=True, add_generation_prompt=True, return_dict=True
            )["input_ids"]
        )
    else:
        prompt_ids = list(tokenizer(text=pair.prompt)["input_ids"])
    chosen_start, chosen = _completion_ids(tokenizer, pair, prompt_ids, pair.chosen)
    rejected_start, rejected = _completion_ids(tokenizer, pair, prompt_ids, pair.rejected)
    # Tokens can merge across the prompt/response boundary: the prompt is what both sequences share.
    shared = min(chosen_start, rejected_start)
    if shared < len(prompt_ids):
        full_chosen = prompt_ids[:chosen_start] + chosen
        full_rejected = prompt_ids[:rejected_start] + rejected
        prompt_ids = prompt_ids[:shared]
        chosen, rejected = full_chosen[shared:], full_rejected[shared:]
    prompt_budget = max_prompt_length
    if prompt_budget is None and len(prompt_ids) >= max_length:
        prompt_budget = max_length // 2
    if prompt_budget is not None and len(prompt_ids) > prompt_budget:
        prompt_ids = prompt_ids[-prompt_budget:]  # keep the end, nearest the answer
    room = max_length - len(prompt_ids)
    return TokenizedPair(prompt_ids, chosen[:room], rejected[:room])


def pairs_tokenize(
    tokenizer: Any, pairs: list[Pair], *, max_length: int, max_prompt_length: int | None
) -> list[TokenizedPair]:
    return [
        pair_tokenize(tokenizer, p, max_length=max_length, max_prompt_length=max_prompt_length) for p in pairs
    ]


PAIR_SIDES = ("chosen_ids", "rejected_ids")


def batch_collate(
    items: list[tuple[int, TokenizedPair]], *, pad_id: int, sides: tuple[str, ...] = PAIR_SIDES
) -> Batch:
    """The ``[chosen; rejected]`` batch of (dataset index, tokenized pair) items (``sides``: which
    responses make rows; SFT takes the chosen ones alone)."""
    rows, masks = [], []
    for side in sides:
        for _, pair in items:
            completion = getattr(pair, side)
            rows.append(pair.prompt_ids + completion)
            masks.append([0] * len(pair.prompt_ids) + [1] * len(completion))
    width = max(len(row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    completion = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (row, mask) in enumerate(zip(rows, masks, strict=True)):
        input_ids[i, : len(row)] = torch.tensor(row)
        attention[i, : len(row)] = 1
        completion[i, : len(row)] = torch.tensor(mask)
    return Batch(input_ids, attention, completion, torch.tensor([index for index, _ in items]))


def batches(
    data: list[TokenizedPair],
    indices: list[int],
    *,
    batch_size: int,
    pad_id: int,
    shuffle_seed: int | None,
    group_by_length: bool = False,
    sides: tuple[str, ...] = PAIR_SIDES,
) -> list[Batch]:
    """The micro-batches of ``indices`` (shuffled with ``shuffle_seed`` unless it is None).

    ``group_by_length``: pairs of similar length share a batch (sorted by their longer row, the
    batches then shuffled), so a padded batch pads little; for models that cannot be packed."""
    order = list(indices)
    if shuffle_seed is not None:
        random.Random(shuffle_seed).shuffle(order)
    if group_by_length:
        order.sort(
            key=lambda i: len(data[i].prompt_ids) + max(len(data[i].chosen_ids), len(data[i].rejected_ids))
        )
    groups = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    if group_by_length and shuffle_seed is not None:
        random.Random(shuffle_seed + 1).shuffle(groups)
    return [batch_collate([(i, data[i]) for i in group], pad_id=pad_id, sides=sides) for group in groups]


# --- Unpaired examples (KTO) and supervised ones (SFT) ------------------------------------------------


@dataclass(frozen=True)
class Example:
    """One answer to one prompt: KTO's unpaired row (``label``: desirable or not) or an SFT target."""

    line: int
    prompt: Any
    completion: Any
    label: bool = True

    @property
    def conversational(self) -> bool:
        return isinstance(self.prompt, list)


def _completion_problem(prompt: Any, completion: Any, field: str) -> str | None:
    if isinstance(prompt, list):
        if problem := message_problem(prompt, "prompt", assistant_only=False):
            return problem
        return message_problem(completion, field, assistant_only=True)
    if not isinstance(prompt, str):
        return "'prompt' must be a string or a list of messages"
    if not isinstance(completion, str):
        return f"'{field}' must be a string when 'prompt' is a string"
    return f"'{field}' is empty" if not completion.strip() else None


def _examples_of(record: Any, *, labelled: bool) -> tuple[list[tuple[Any, Any, bool]], str | None]:
    """The (prompt, completion, label) rows one JSON record holds, or the problem with it.

    Read: TRL's unpaired rows (``prompt``, ``completion``, ``label``: KTO; SFT needs no label), TRL's
    prompt-completion rows, conversations (``messages`` ending in an assistant turn: the rest is the
    prompt) and preference pairs (KTO: chosen desirable, rejected not; SFT: the chosen answer)."""
    if not isinstance(record, dict):
        return [], "expected a JSON object"
    if "messages" in record and "prompt" not in record:
        messages = record["messages"]
        if not isinstance(messages, list) or len(messages) < 2 or not isinstance(messages[-1], dict):
            return [], "'messages' must hold a prompt and a last assistant message"
        record = {**record, "prompt": messages[:-1], "completion": [messages[-1]]}
    if "chosen" in record and "rejected" in record:
        if problem := _pair_problem(record):
            return [], problem
        rows = [(record["prompt"], record["chosen"], True)]
        return ([*rows, (record["prompt"], record["rejected"], False)] if labelled else rows), None
    for field in ("prompt", "completion"):
        if field not in record:
            return [], f"missing field '{field}' (or 'chosen'/'rejected', or 'messages')"
    if problem := _completion_problem(record["prompt"], record["completion"], "completion"):
        return [], problem
    label = record.get("label", True)
    if labelled and not isinstance(label, bool):
        return [], "'label' must be true (desirable) or false (undesirable)"
    return [(record["prompt"], record["completion"], label)], None


def examples_read(path: str | Path, *, labelled: bool) -> list[Example]:
    """Every example of a JSONL file, validated; InvalidInput lists every bad line.
    ``labelled``: KTO (labels kept, pairs give both answers); else SFT (pairs give the chosen one)."""

    def examples(number: int, record: Any) -> list[Example] | str:
        rows, problem = _examples_of(record, labelled=labelled)
        return problem or [Example(number, prompt, completion, label) for prompt, completion, label in rows]

    return jsonl_read(path, examples, nothing="no examples")


def examples_tokenize(
    tokenizer: Any, examples: list[Example], *, max_length: int, max_prompt_length: int | None
) -> list[TokenizedPair]:
    """Each example as (prompt, completion) ids, the same rules as a pair's (``rejected_ids`` empty)."""
    out = []
    for e in examples:
        pair = Pair(e.line, e.prompt, e.completion, e.completion)
        tokenized = pair_tokenize(tokenizer, pair, max_length=max_length, max_prompt_length=max_prompt_length)
        out.append(TokenizedPair(tokenized.prompt_ids, tokenized.chosen_ids, []))
    return out


def kto_partners(
    data: list[TokenizedPair], indices: list[int], *, batch_size: int, max_length: int
) -> list[TokenizedPair]:
    """Each example with its KL partner as ``rejected_ids``: the completion of the example before it
    in its group of ``batch_size`` (in ``indices`` order, wrapping round), after its own prompt.

    KTO's reference point is the policy's KL from the reference on such mismatched answers (TRL
    rotates completions by one within each batch the same way). The partner is fixed per example, so
    reference log-probs computed once stay valid whatever order the epochs take."""
    out = list(data)
    for start in range(0, len(indices), batch_size):
        group = indices[start : start + batch_size]
        for k, i in enumerate(group):
            partner = data[group[k - 1]].chosen_ids
            room = max_length - len(data[i].prompt_ids)
            out[i] = TokenizedPair(data[i].prompt_ids, data[i].chosen_ids, partner[:room])
    return out
