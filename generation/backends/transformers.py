"""The transformers backend: batched ``generate`` with left padding and the KV cache, anywhere.

bf16 on a GPU that supports it, float32 on a CPU. Prompts are sorted by length so that a batch pads
little; the batch size fits memory (on a GPU from the free memory and the KV cache a sequence needs).
Each prompt is prefilled once and its KV cache repeated for its K samples, which then decode together.
The mean log-probability of each completion is taken while decoding, from the model's own logits at
each step (not the temperature/top-p-warped ones: ``_LogprobMeter`` runs before the sampler).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import transformers
from transformers import LogitsProcessorList

from config.invalid_input import InvalidInput
from generation.backends.sampling import NucleusSampler
from generation.types import Completion, Messages, ModelSpec, Sampling, TokenCallback

CPU_SEQUENCES_PER_BATCH = 64  # on a CPU larger batches stop paying off and only hold memory
LOGPROB_CHUNK_ELEMENTS = 2**26  # rows x positions x vocabulary per scoring forward (~256 MB of float32)
# what transformers calls the KV cache in forward/generate arguments and outputs (renamed in 5.x)
CACHE_ARGUMENT = "cache" if int(transformers.__version__.split(".")[0]) >= 5 else "past_key_values"


def stop_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every token a completion ends at: the generation config's EOS ids and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    found = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        found.add(tokenizer.eos_token_id)
    return sorted(found)


@torch.inference_mode()
def completion_logps(
    model: Any, rows: list[tuple[list[int], list[int]]], *, pad_id: int, device: Any, total: bool = False
) -> torch.Tensor:
    """[n] mean per-token log-prob (``total``: the sum) of each row's completion ids after its prompt
    ids under ``model``, float32 on the CPU. Rows go longest first, in right-padded chunks of at most
    ``LOGPROB_CHUNK_ELEMENTS`` logits (sized on the chunk's longest row)."""
    vocab = model.config.vocab_size
    order = sorted(range(len(rows)), key=lambda i: -(len(rows[i][0]) + len(rows[i][1])))
    results = torch.zeros(len(rows))
    start = 0
    while start < len(order):
        longest = len(rows[order[start]][0]) + len(rows[order[start]][1])
        chunk = order[start : start + max(1, LOGPROB_CHUNK_ELEMENTS // max(1, longest * vocab))]
        ids = torch.full((len(chunk), longest), pad_id, dtype=torch.long)
        attention = torch.zeros((len(chunk), longest), dtype=torch.long)
        answer_mask = torch.zeros((len(chunk), longest), dtype=torch.float32)
        for row, i in enumerate(chunk):  # right padding: positions count from the left
            prompt_ids, answer_ids = rows[i]
            full = prompt_ids + answer_ids
            ids[row, : len(full)] = torch.tensor(full)
            attention[row, : len(full)] = 1
            answer_mask[row, len(prompt_ids) : len(full)] = 1.0
        ids, attention = ids.to(device), attention.to(device)
        logits = model(input_ids=ids, attention_mask=attention, use_cache=False).logits[:, :-1].float()
        token_logps = -F.cross_entropy(logits.transpose(1, 2), ids[:, 1:], reduction="none").cpu()
        mask = answer_mask[:, 1:]
        summed = (token_logps * mask).sum(1)
        results[chunk] = summed if total else summed / mask.sum(1).clamp(min=1)
        start += len(chunk)
    return results


class _LogprobMeter:
    """A logits processor that changes nothing: it keeps, for each step, each row's log-prob of the
    token decoded at the step before, under the model's raw logits (it runs first, before any
    sampling warps them), so a completion's mean log-prob comes with decoding, not from a second
    forward pass over every finished sequence (which took about 100 s for ``make demo``'s 36 answers
    on 2 cores, with nothing on screen)."""

    def __init__(self) -> None:
        self.previous: torch.Tensor | None = None  # the last step's log-probs [rows, vocabulary]
        self.chosen: list[torch.Tensor] = []  # per step: each row's log-prob of its token [rows]

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        self._take(input_ids[:, -1])
        self.previous = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def _take(self, tokens: torch.Tensor) -> None:
        if self.previous is not None:
            self.chosen.append(self.previous.gather(1, tokens.unsqueeze(1)).squeeze(1))
            self.previous = None

    def means(self, new: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Each row's mean over its first ``lengths`` tokens of ``new`` (the generated tokens)."""
        self._take(new[:, -1])  # the last step's token, which no later step saw
        logps = torch.stack(self.chosen, dim=1)[:, : new.shape[1]]
        mask = (torch.arange(logps.shape[1], device=logps.device).unsqueeze(0) < lengths.unsqueeze(1)).float()
        return ((logps * mask).sum(1) / mask.sum(1).clamp(min=1)).cpu()


class _StepCounter:
    """A logits processor that changes nothing: it tells ``on_tokens`` of each decoding step's tokens,
    one per row not yet ended (its last token is no end-of-sequence or padding)."""

    def __init__(self, on_tokens: TokenCallback, stop_ids: list[int]) -> None:
        self.on_tokens = on_tokens
        self.stop_ids = torch.tensor(stop_ids)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        ended = torch.isin(input_ids[:, -1], self.stop_ids.to(input_ids.device))
        self.on_tokens(int((~ended).sum()))
        return scores


def _load_args(location: str) -> tuple[str, dict[str, Any]]:
    path = Path(location)
    if path.suffix == ".gguf":
        return str(path.parent), {"gguf_file": path.name}
    return location, {}


class TransformersBackend:
    name = "transformers"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        batch_size: int | None = None,
        prefill_once: bool = True,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if dtype is None:
            cuda_bf16 = self.device.type == "cuda" and torch.cuda.is_bf16_supported()
            dtype = torch.bfloat16 if cuda_bf16 else torch.float32
        where, extra = _load_args(spec.location)
        self.tokenizer = AutoTokenizer.from_pretrained(where, **extra)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        model = AutoModelForCausalLM.from_pretrained(where, dtype=dtype, **extra)
        if spec.adapter:
            from peft import PeftModel

            model = PeftModel.from_pretrained(
                model, spec.adapter
            ).merge_and_unload()  # no adapter cost per token
        self.model = model.to(self.device).eval()
        self.eos_ids = stop_ids(self.model, self.tokenizer)
        if not self.eos_ids:
            raise InvalidInput(f"{spec.location}: the model has no EOS token; completions could not end")
        self.batch_size = batch_size
        self.prefill_once = prefill_once  # False: every sample prefills its prompt (the plain way)

    def close(self) -> None:
        """Nothing to release: the model goes with the object."""

    def render(self, messages: Messages) -> list[int]:
        """The prompt's token ids, through the chat template (a plain prompt without one: as is)."""
        if self.tokenizer.chat_template:
            return list(
                self.tokenizer.apply_chat_template(
                    messages, add_generation_prompt=True, tokenize=True, return_dict=True
                )["input_ids"]
            )
        if len(messages) == 1 and messages[0]["role"] == "user":
            return list(self.tokenizer(text=messages[0]["content"])["input_ids"])
        raise InvalidInput("a conversation prompt needs a model whose tokenizer has a chat template")

    def prompts_per_batch(self, sampling: Sampling, longest_prompt: int) -> int:
        if self.batch_size:
            return self.batch_size
        if self.device.type != "cuda":
            return max(1, CPU_SEQUENCES_PER_BATCH // sampling.samples)
        config = self.model.config
        heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        bytes_per_token = 2 * config.num_hidden_layers * heads * head_dim * self.model.dtype.itemsize
        per_sequence = bytes_per_token * (longest_prompt + sampling.max_new_tokens)
        free, _ = torch.cuda.mem_get_info(self.device)
        return max(1, min(256, int(0.5 * free / per_sequence) // sampling.samples))

    @torch.inference_mode()
    def generate(
        self, prompts: list[Messages], sampling: Sampling, on_tokens: TokenCallback | None = None
    ) -> list[list[Completion]]:
        rendered = [self.render(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: len(rendered[i]))
        results: list[list[Completion]] = [[] for _ in prompts]
        per_batch = self.prompts_per_batch(sampling, max((len(r) for r in rendered), default=1))
        for start in range(0, len(order), per_batch):
            chosen = order[start : start + per_batch]
            completions = self._generate_batch(
                [rendered[i] for i in chosen], sampling, seed=sampling.seed + start, on_tokens=on_tokens
            )
            for j, i in enumerate(chosen):
                results[i] = completions[j * sampling.samples : (j + 1) * sampling.samples]
        return results

    def _generate_batch(
        self,
        batch_ids: list[list[int]],
        sampling: Sampling,
        *,
        seed: int,
        on_tokens: TokenCallback | None = None,
    ) -> list[Completion]:
        padded = self.tokenizer.pad({"input_ids": batch_ids}, padding=True, return_tensors="pt").to(
            self.device
        )
        width = padded["input_ids"].shape[1]
        torch.manual_seed(seed)
        sample = sampling.temperature > 0
        # Greedy decoding gives one answer per prompt: generate it once, repeat it K times below.
        # Sampling repeats each prompt K times and decodes through NucleusSampler (greedy over its draw).
        returned = sampling.samples if sample else 1
        prefilled = {}
        if returned > 1:
            if width > 1 and self.prefill_once:
                prefilled = {
                    CACHE_ARGUMENT: self._prefill(padded["input_ids"], padded["attention_mask"], returned)
                }
            padded = {key: value.repeat_interleave(returned, dim=0) for key, value in padded.items()}
        meter = _LogprobMeter()  # first: it must see the model's own logits
        processors = LogitsProcessorList(
            [
                meter,
                *([NucleusSampler(temperature=sampling.temperature, top_p=sampling.top_p)] if sample else []),
            ]
        )
        if on_tokens is not None:
            pad = [self.tokenizer.pad_token_id] if self.tokenizer.pad_token_id is not None else []
            processors.append(_StepCounter(on_tokens, [*self.eos_ids, *pad]))
        out = self.model.generate(
            **padded,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=processors,
            max_new_tokens=sampling.max_new_tokens,
            pad_token_id=self.tokenizer.pad_token_id,
            eos_token_id=self.eos_ids,
            use_cache=True,
            **prefilled,
        )
        new = out[:, width:]
        is_eos = torch.isin(new, torch.tensor(self.eos_ids, device=new.device))
        has_eos = is_eos.any(dim=1)
        first_eos = torch.where(
            has_eos, is_eos.int().argmax(dim=1), torch.full_like(has_eos, new.shape[1], dtype=torch.long)
        )
        lengths = torch.where(has_eos, first_eos + 1, first_eos)  # the EOS counts as a generated token
        mean_logprobs = meter.means(new, lengths.to(new.device))
        completions = []
        for row in range(new.shape[0]):
            text_ids = new[row, : int(first_eos[row])]
            completions.append(
                Completion(
                    text=self.tokenizer.decode(text_ids, skip_special_tokens=True),
                    token_count=int(lengths[row]),
                    finish_reason="stop" if bool(has_eos[row]) else "length",
                    mean_logprob=float(mean_logprobs[row]),
                )
            )
        if returned != sampling.samples:
            completions = [c for c in completions for _ in range(sampling.samples)]
        return completions

    def _prefill(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, repeats: int) -> Any:
        """The KV cache of every prompt but its last token, computed once and repeated ``repeats`` times
        (``generate`` then feeds the last token, the first step of decoding). Left padding: positions
        count from each row's first real token, as ``generate`` counts them."""
        positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=input_ids[:, :-1],
            attention_mask=attention_mask[:, :-1],
            position_ids=positions[:, :-1],
            use_cache=True,
            logits_to_keep=1,
        )
        cache = getattr(out, CACHE_ARGUMENT)
        cache.batch_repeat_interleave(repeats)
        return cache

    @torch.inference_mode()
    def score(
        self, prompts: list[Messages], answers: list[str], ended: list[bool], *, total: bool = False
    ) -> list[float]:
        """Mean per-token log-prob of each answer to its prompt under this model (the answer's tokens,
        and its end-of-sequence token where the answer ``ended``): how fluent another model's text is
        to this one; ``total``: their sum, the sequence log-prob (DPO's implicit reward is built from
        it). Answers are re-tokenised from their text."""
        end = self.tokenizer.eos_token_id if self.tokenizer.eos_token_id in self.eos_ids else self.eos_ids[0]
        rows = []
        for messages, text, stop in zip(prompts, answers, ended, strict=True):
            answer = list(self.tokenizer.encode(text, add_special_tokens=False)) + ([end] if stop else [])
            rows.append((self.render(messages), answer or [end]))
        logps = completion_logps(
            self.model, rows, pad_id=self.tokenizer.pad_token_id, device=self.device, total=total
        )
        return logps.tolist()
