"""Continuous batching for live answers on the transformers backend: every answer one model is
writing decodes in one batch, one forward per step for all of them.

On a CPU, decoding one token is bound by reading the weights (SmolLM2-135M in float32: about 85 ms a
step here, whether for one answer or eight), so answers generated one per thread share that step
time and gain nothing from each other (8 concurrent answers: 1.7 tokens/s each, 14 in all). Here a
scheduler thread per model keeps one batch: a new request is prefilled alone between two steps (its
first token comes from its prefill, so the time to the first token is one prefill, not a queue),
then joins the batch (its KV cache left-padded to the batch's length); each step feeds every row's
last token with its own position, samples each row with its own settings, and drops the rows that
ended (the model's end token, ``max_new_tokens``, or a stop from the client).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from generation.backends import Messages, Sampling, StreamDelta
from generation.backends.transformers import CACHE_ARGUMENT

logger = logging.getLogger("prefloop.generation_server")

PREFILL_TOKENS = 128  # prompt tokens read in one forward between two decoding steps (one prompt at least)


@dataclass
class _Live:
    ids: list[int]  # the prompt's tokens
    sampling: Sampling
    stop: threading.Event
    out: queue.Queue[StreamDelta | BaseException] = field(default_factory=queue.Queue)
    generated: list[int] = field(default_factory=list)
    shown: int = 0  # characters of the decoded answer already sent


def _sample(logits: torch.Tensor, settings: list[Sampling], generator: torch.Generator) -> list[int]:
    """One token per row of ``logits`` [rows, vocabulary], each row with its own settings: greedy at
    temperature 0, else nucleus sampling (top-p over the temperature-scaled distribution). One sort
    for the whole batch."""
    greedy = logits.argmax(-1)
    temperature = torch.tensor([max(s.temperature, 1e-6) for s in settings], dtype=torch.float32)
    top_p = torch.tensor([s.top_p for s in settings], dtype=torch.float32)
    probs = torch.softmax(logits.float() / temperature[:, None], dim=-1)
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    sorted_probs = sorted_probs * (sorted_probs.cumsum(-1) - sorted_probs < top_p[:, None])
    drawn = order.gather(-1, torch.multinomial(sorted_probs, 1, generator=generator)).squeeze(-1)
    return [int(g) if s.temperature <= 0 else int(d) for g, d, s in zip(greedy, drawn, settings, strict=True)]


def _left_pad(tensor: torch.Tensor, length: int, dim: int) -> torch.Tensor:
    missing = length - tensor.shape[dim]
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


class LiveBatcher:
    """The live answers of one loaded model (a ``TransformersBackend``), decoded together."""

    def __init__(self, backend: Any, *, seed: int = 0) -> None:
        self.backend = backend
        self.model, self.tokenizer = backend.model, backend.tokenizer
        self.eos = set(backend.eos_ids)
        self.pending: queue.Queue[_Live | None] = queue.Queue()
        self.generator = torch.Generator().manual_seed(seed)
        self.widest = 0  # the most answers one step has decoded together (a figure for tests and logs)
        self.thread = threading.Thread(target=self._loop, name="prefloop-batcher", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.pending.put(None)

    def stream(self, messages: Messages, sampling: Sampling, stop: threading.Event) -> Iterator[StreamDelta]:
        """One answer to ``messages`` as it is written: text pieces, then a last piece with its finish
        reason (``stop``, ``length``, ``cancelled``) and its token count."""
        live = _Live(ids=self.backend.render(messages), sampling=sampling, stop=stop)
        self.pending.put(live)
        while True:
            piece = live.out.get()
            if isinstance(piece, BaseException):
                raise piece
            yield piece
            if piece.finish_reason is not None:
                return

    # --- the scheduler thread ------------------------------------------------------------------

    def _loop(self) -> None:
        rows: list[_Live] = []
        waiting: list[_Live] = []
        cache: Any = None
        mask = torch.zeros(0, 0, dtype=torch.long)
        while True:
            fresh: list[_Live] = []
            try:
                arrived = (
                    [self.pending.get()] if not rows and not waiting else []
                )  # idle: sleep till one comes
                while True:
                    try:
                        arrived.append(self.pending.get_nowait())
                    except queue.Empty:
                        break
                if None in arrived:
                    return
                waiting.extend(live for live in arrived if live is not None)
                # A group of the waiting prompts within PREFILL_TOKENS (at least one), between two steps:
                # the first answers start without waiting for every prompt of a burst to be read.
                while waiting and (
                    not fresh or sum(len(x.ids) for x in fresh) + len(waiting[0].ids) <= PREFILL_TOKENS
                ):
                    fresh.append(waiting.pop(0))
                if fresh:
                    joined = self._prefill(fresh)
                    if joined is not None:
                        cache, mask = self._join(cache, mask, *joined[:2])
                        rows.extend(joined[2])
                if rows:
                    cache, mask, rows = self._step(cache, mask, rows)
            except Exception as exc:  # a failed forward ends every live answer with the reason
                logger.exception("live batch failed")
                for live in rows + fresh:
                    live.out.put(exc)
                rows, cache, mask = [], None, torch.zeros(0, 0, dtype=torch.long)

    @torch.inference_mode()
    def _prefill(self, fresh: list[_Live]) -> tuple[Any, torch.Tensor, list[_Live]] | None:
        """The prompts that arrived together, prefilled in one forward (left-padded), each one's first
        token sent at once: (their KV cache, its mask, the ones still going) or None if all ended."""
        longest = max(len(live.ids) for live in fresh)
        ids = torch.tensor([[0] * (longest - len(live.ids)) + live.ids for live in fresh])
        mask = torch.tensor([[0] * (longest - len(live.ids)) + [1] * len(live.ids) for live in fresh])
        device = self.backend.device
        out = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=(mask.cumsum(-1) - 1).clamp(min=0).to(device),
            use_cache=True,
            logits_to_keep=1,
        )
        tokens = _sample(out.logits[:, -1], [live.sampling for live in fresh], self.generator)
        keep = [
            i
            for i, (live, token) in enumerate(zip(fresh, tokens, strict=True))
            if not self._take(live, token)
        ]
        if not keep:
            return None
        cache = getattr(out, CACHE_ARGUMENT)
        if len(keep) < len(fresh):
            cache.batch_select_indices(torch.tensor(keep, device=device))
        return cache, mask[keep], [fresh[i] for i in keep]

    def _join(
        self, cache: Any, mask: torch.Tensor, new: Any, new_mask: torch.Tensor
    ) -> tuple[Any, torch.Tensor]:
        """``new`` (one row) added to the batch, the shorter side left-padded (masked out)."""
        from transformers import DynamicCache

        if cache is None or mask.shape[0] == 0:
            return new, new_mask
        length = max(mask.shape[1], new_mask.shape[1])
        layers = [
            (
                torch.cat([_left_pad(old.keys, length, 2), _left_pad(add.keys, length, 2)]),
                torch.cat([_left_pad(old.values, length, 2), _left_pad(add.values, length, 2)]),
            )
            for old, add in zip(cache.layers, new.layers, strict=True)
        ]
        return DynamicCache(ddp_cache_data=layers), torch.cat(
            [_left_pad(mask, length, 1), _left_pad(new_mask, length, 1)]
        )

    @torch.inference_mode()
    def _step(
        self, cache: Any, mask: torch.Tensor, rows: list[_Live]
    ) -> tuple[Any, torch.Tensor, list[_Live]]:
        """One token for every row; the rows that ended leave the batch."""
        device = self.backend.device
        self.widest = max(self.widest, len(rows))
        last = torch.tensor([[live.generated[-1]] for live in rows], device=device)
        positions = mask.sum(-1, keepdim=True).to(device)  # each row counts its own real tokens
        mask = torch.cat([mask, torch.ones(len(rows), 1, dtype=torch.long)], dim=1)
        out = self.model(
            input_ids=last,
            attention_mask=mask.to(device),
            position_ids=positions,
            **{CACHE_ARGUMENT: cache},
            use_cache=True,
        )
        cache = getattr(out, CACHE_ARGUMENT)
        tokens = _sample(out.logits[:, -1], [live.sampling for live in rows], self.generator)
        ended = [self._take(live, token) for live, token in zip(rows, tokens, strict=True)]
        if any(ended):
            keep = [i for i, done in enumerate(ended) if not done]
            if not keep:
                return None, torch.zeros(0, 0, dtype=torch.long), []
            index = torch.tensor(keep, device=device)
            cache.batch_select_indices(index)
            mask = mask[keep]
            rows = [rows[i] for i in keep]
            first = int(mask.any(0).nonzero()[0])  # columns every remaining row pads: dropped
            if first:
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, first:], layer.values[:, :, first:]
                mask = mask[:, first:]
        return cache, mask, rows

    def _take(self, live: _Live, token: int) -> bool:
        """Record ``token`` for ``live``, send the text it completes; True when the answer ended."""
        if live.stop.is_set():
            live.out.put(StreamDelta("", "cancelled", len(live.generated)))
            return True
        if token in self.eos:
            self._send(live, final=True)
            live.out.put(StreamDelta("", "stop", len(live.generated) + 1))
            return True
        live.generated.append(token)
        self._send(live, final=False)
        if len(live.generated) >= live.sampling.max_new_tokens:
            self._send(live, final=True)
            live.out.put(StreamDelta("", "length", len(live.generated)))
            return True
        return False

    def _send(self, live: _Live, *, final: bool) -> None:
        text = self.tokenizer.decode(live.generated, skip_special_tokens=True)
        if not final and text.endswith("\ufffd"):  # a character split across tokens: wait for the rest
            return
        if len(text) > live.shown:
            live.out.put(StreamDelta(text[live.shown :]))
            live.shown = len(text)
