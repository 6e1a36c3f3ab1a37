"""The engines behind live answers, and the supervisor that starts and stops them.

The generation process (``manage.py generation_server``, ``generation.server``) answers for every
registered policy; each answer comes from an engine:

- **vLLM** wherever vLLM's environment is built (``make vllm``: the CPU build here, the GPU build on a
  GPU). One engine per base model, started with LoRA enabled: a policy that is an adapter (registered
  with one, or a LoRA round's policy, which keeps its adapter beside the merged copy) is loaded into
  its base's engine at runtime (``POST /v1/load_lora_adapter``), so the policies of one base are one
  engine and decode in one batch. A full-weight policy gets an engine of its own.
- **plain** where vLLM is not built (or the policy is a GGUF file, which vLLM does not serve):
  transformers' own ``generate`` with its streamer, one answer at a time per model. No batching: it
  keeps small setups and the tests working, not a team's arena (docs/architecture.md).

Engines start on demand (or when warmed: ``warm``) within a memory budget (``memory_gb``): a start
that would pass it first stops the least recently used engines that answer nothing now; where every
engine is busy, the request is refused with the reason (503), never queued behind a stream. An engine's
memory is estimated from its weights before it starts and measured (resident memory of its processes)
once it is up.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from config.invalid_input import InvalidInput
from generation.types import Messages, ModelSpec, Sampling, StreamDelta

logger = logging.getLogger("prefloop.generation_server")

GIB = 1024**3
ENGINES = ("auto", "vllm", "plain")
MAX_LORAS = 4  # adapters decoding in one batch of a vLLM engine
MAX_LORA_RANK = 16  # the highest adapter rank an engine reserves for (a round's default is 8)
VLLM_OVERHEAD_GB = 1.5  # a vLLM engine's processes beyond weights and KV cache (measured: docs/benchmarks.md)
PLAIN_OVERHEAD_GB = 0.3
ANSWER_SILENCE = 600.0  # seconds an engine's answer may stay silent
# Prompt tokens a vLLM engine reads in one step between other answers' steps (chunked prefill; 0:
# vLLM's own choice, none on a CPU), so a long prompt would delay the others by a chunk, not by the
# whole prompt; no gain measured on this CPU (docs/benchmarks.md, "One heavy user").
PREFILL_CHUNK = int(os.environ.get("PREFLOOP_ENGINE_PREFILL_CHUNK", "0"))  # 0: vLLM's own choice
# vLLM's priority scheduling (off by default: no gain measured on this CPU): each request ranked by
# its prompt's length (a level per PRIORITY_CHARS characters), so short prompts are read before a long
# one that waits (docs/benchmarks.md, "One heavy user").
PRIORITY = os.environ.get("PREFLOOP_ENGINE_PRIORITY", "0") not in ("0", "false", "no", "off")
PRIORITY_CHARS = 2000


class EngineRefused(Exception):
    """The supervisor cannot answer for a model now; ``status`` is the HTTP status to say so with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Served:
    """What answers for a model id: weights at ``location``, with a LoRA ``adapter`` on them if any.
    ``id`` is the name clients ask for (the policy's adapter, else its location)."""

    id: str
    location: str
    adapter: str = ""
    whole: str = ""  # the same weights merged, for an engine that takes no adapters


def weights_bytes(location: str) -> int:
    """The size of a model's weights on disk (a directory's safetensors or bins, or a GGUF file)."""
    path = Path(location)
    if path.is_file():
        return path.stat().st_size
    files = [*path.glob("*.safetensors"), *path.glob("*.bin")]
    return sum(f.stat().st_size for f in files)


def _stored_bytes_per_weight(location: str) -> int:
    try:
        config = json.loads((Path(location) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 4
    dtype = str(config.get("torch_dtype") or config.get("dtype") or "float32")
    return 2 if dtype in ("bfloat16", "float16") else 4


def engine_estimate_gb(served: Served, kind: str, *, gpu: bool) -> float:
    """Memory an engine for ``served`` will take, before it starts: its weights in the dtype it runs
    (float32 on a CPU), plus KV cache and runtime for vLLM."""
    stored = weights_bytes(served.location)
    running = (
        stored
        if gpu or served.location.endswith(".gguf")
        else stored * 4 // _stored_bytes_per_weight(served.location)
    )
    if kind == "plain":
        return running / GIB + PLAIN_OVERHEAD_GB
    kv = 0.0 if gpu else float(os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2"))
    return running / GIB + kv + VLLM_OVERHEAD_GB


class Engine(Protocol):
    kind: str
    key: str
    memory_gb: float
    busy: int  # requests using it now (a busy engine is never stopped to make room)
    ready: threading.Event  # set once started (or failed: ``error``)
    error: str
    last_used: float

    def model_for(self, served: Served) -> str:
        """The name to ask this engine for ``served`` (loading its adapter first where needed)."""
        ...

    def answers(self) -> list[str]:
        """The model ids it answers for now (a vLLM engine: its base and the adapters loaded)."""
        ...

    def stream(
        self, model: str, messages: Messages, sampling: Sampling, stop: threading.Event
    ) -> Iterator[StreamDelta]: ...

    def stop(self) -> None: ...


class _Starting:
    """What every engine shares: started in a thread of its own, ``ready`` when up or failed."""

    kind = ""

    def __init__(self, key: str, memory_gb: float) -> None:
        self.key, self.memory_gb = key, memory_gb
        self.busy, self.error, self.last_used = 0, "", time.monotonic()
        self.ready = threading.Event()
        self.stopped = False
        threading.Thread(target=self._run_start, name=f"engine-start {key}", daemon=True).start()

    def _run_start(self) -> None:
        try:
            self._start()
        except Exception as exc:  # the requests waiting on it, and the next ones, hear why
            logger.exception("engine %s failed to start", self.key)
            self.error = f"the {self.kind} engine for {self.key} failed to start: {exc}"
        finally:
            self.ready.set()

    def _start(self) -> None:
        raise NotImplementedError


class VLLMEngine(_Starting):
    """A vLLM server for one base model, LoRA enabled, its adapters loaded at runtime."""

    kind = "vllm"

    def __init__(self, served: Served, memory_gb: float, *, gpu: bool, loras: tuple[int, int]) -> None:
        self.location, self.gpu, self.loras = served.location, gpu, loras
        self.server: Any = None
        self.adapters: dict[str, str] = {}
        self._adapter_lock = threading.Lock()
        super().__init__(served.location, memory_gb)

    def _start(self) -> None:
        from generation.backends.vllm import VLLMServer

        self.server = VLLMServer(
            ModelSpec(self.location),
            loras=self.loras,
            gpu=self.gpu,
            prefill_chunk=PREFILL_CHUNK,
            priority=PRIORITY,
        )
        if self.stopped:  # stopped while starting
            self.server.stop()
            return
        measured = self.server.memory_bytes() / GIB
        if measured:
            self.memory_gb = measured
        logger.info(
            "vLLM engine for %s ready at %s (%.1f GiB)", self.location, self.server.url, self.memory_gb
        )

    def answers(self) -> list[str]:
        return [self.location, *self.adapters]

    def model_for(self, served: Served) -> str:
        if not served.adapter:
            return self.location
        with self._adapter_lock:
            if served.id not in self.adapters:
                from generation.backends.vllm import _adapter_rank

                if (rank := _adapter_rank(served.adapter)) > self.loras[1]:
                    raise EngineRefused(
                        400,
                        f"the adapter {served.adapter} has rank {rank}; engines reserve for rank {self.loras[1]} "
                        "at most (generation_server --max-lora-rank)",
                    )
                body = {"lora_name": served.id, "lora_path": served.adapter}
                answer = httpx.post(f"{self.server.url}/v1/load_lora_adapter", json=body, timeout=120.0)
                if answer.status_code != 200:
                    raise EngineRefused(
                        502,
                        f"the vLLM engine for {self.location} could not load {served.adapter}: {answer.text[:300]}",
                    )
                self.adapters[served.id] = served.adapter
        return served.id

    def stream(
        self, model: str, messages: Messages, sampling: Sampling, stop: threading.Event
    ) -> Iterator[StreamDelta]:
        from generation.streaming import chat_stream

        extra = {"priority": sum(len(m["content"]) for m in messages) // PRIORITY_CHARS} if PRIORITY else None
        return chat_stream(
            url=self.server.url,
            model=model,
            messages=messages,
            sampling=sampling,
            stop=stop,
            timeout=ANSWER_SILENCE,
            extra=extra,
        )

    def stop(self) -> None:
        self.stopped = True
        if self.server is not None:
            self.server.stop()


class _StopWhen:
    """A stopping criterion: the client asked to stop, or stopped reading."""

    def __init__(self, *events: threading.Event) -> None:
        self.events = events

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> bool:
        return any(event.is_set() for event in self.events)


_PLAIN_ONE = threading.Lock()  # generate samples from torch's one global generator: one answer at a time


class PlainEngine(_Starting):
    """transformers' ``generate`` with its text streamer, one answer at a time in the process: where
    vLLM is not built. Nothing here schedules or samples: that is ``generate``'s. Each answer's seed is
    the engine's next (so a run of requests answers the same way twice, and two answers differ)."""

    kind = "plain"

    def __init__(self, served: Served, memory_gb: float) -> None:
        self.served = served
        self.backend: Any = None
        self.answered = 0
        super().__init__(f"{served.location}{' + ' + served.adapter if served.adapter else ''}", memory_gb)

    def _start(self) -> None:
        from generation.backends.transformers import TransformersBackend

        self.backend = TransformersBackend(ModelSpec(self.served.location, self.served.adapter))

    def model_for(self, served: Served) -> str:
        return served.id

    def answers(self) -> list[str]:
        return [self.served.id]

    def stream(
        self, model: str, messages: Messages, sampling: Sampling, stop: threading.Event
    ) -> Iterator[StreamDelta]:
        import torch
        from transformers import StoppingCriteriaList, TextIteratorStreamer

        with _PLAIN_ONE:
            torch.manual_seed(zlib.crc32(self.key.encode()) + self.answered)
            self.answered += 1
            tokenizer, causal = self.backend.tokenizer, self.backend.model
            ids = torch.tensor([self.backend.render(messages)], device=causal.device)
            streamer = TextIteratorStreamer(
                tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=ANSWER_SILENCE
            )
            sample = sampling.temperature > 0
            options = (
                {"temperature": sampling.temperature, "top_p": sampling.top_p}
                if sample
                else {"temperature": None, "top_p": None, "top_k": None}
            )
            out: dict[str, Any] = {}

            def run() -> None:
                try:
                    with torch.inference_mode():
                        out["ids"] = causal.generate(
                            input_ids=ids,
                            attention_mask=torch.ones_like(ids),
                            max_new_tokens=sampling.max_new_tokens,
                            do_sample=sample,
                            eos_token_id=self.backend.eos_ids,
                            pad_token_id=tokenizer.pad_token_id,
                            streamer=streamer,
                            stopping_criteria=StoppingCriteriaList([_StopWhen(stop, abandoned)]),
                            **options,
                        )
                except BaseException as exc:  # the streamer ends either way; the reader raises it
                    out["error"] = exc
                    streamer.end()

            # A reader that goes away (the generator closed) ends the generation before the next answer
            # starts: a generate left running would draw from the global generator beside it.
            abandoned = threading.Event()
            worker = threading.Thread(target=run, daemon=True)
            worker.start()
            try:
                for text in streamer:
                    if text:
                        yield StreamDelta(text)
            finally:
                abandoned.set()
                worker.join()
            if "error" in out:
                raise out["error"]
            generated = out["ids"][0, ids.shape[1] :].tolist()
            if stop.is_set():
                finish = "cancelled"
            elif generated and generated[-1] in self.backend.eos_ids:
                finish = "stop"
            else:
                finish = "length" if len(generated) >= sampling.max_new_tokens else "stop"
            yield StreamDelta("", finish, len(generated))

    def stop(self) -> None:
        self.stopped = True
        self.backend = None


def engine_kind_default() -> str:
    from generation.backends.vllm import vllm_python

    return "vllm" if vllm_python() is not None else "plain"


class Engines:
    """The running engines, least recently used first, within ``memory_gb``; ``resolve`` says what
    answers for a model id (None: not a registered policy's)."""

    def __init__(
        self,
        resolve: Callable[[str], Served | None],
        *,
        kind: str = "auto",
        memory_gb: float,
        max_loras: int = MAX_LORAS,
        max_lora_rank: int = MAX_LORA_RANK,
        start_timeout: float = 600.0,
        gpu: bool | None = None,
    ) -> None:
        if kind not in ENGINES:
            raise InvalidInput(f"engine must be one of {', '.join(ENGINES)} (got {kind!r})")
        self.resolve, self.memory_gb = resolve, memory_gb
        self.kind = engine_kind_default() if kind == "auto" else kind
        self.loras = (max_loras, max_lora_rank)
        self.start_timeout = start_timeout
        if gpu is None:
            import torch

            gpu = torch.cuda.is_available()
        self.gpu = gpu
        self.engines: OrderedDict[str, Engine] = OrderedDict()
        self.lock = threading.Lock()

    def _served(self, model: str) -> Served:
        served = self.resolve(model)
        if served is None:
            raise EngineRefused(404, f"model {model!r} is not a registered policy's location or adapter")
        return served

    def _kind_for(self, served: Served) -> str:
        return "plain" if self.kind == "plain" or served.location.endswith(".gguf") else "vllm"

    def _key(self, served: Served, kind: str) -> str:
        return f"vllm:{served.location}" if kind == "vllm" else f"plain:{served.location}|{served.adapter}"

    def _engine(self, served: Served) -> Engine:
        """The engine for ``served``, started if needed (making room first); call with the lock held."""
        kind = self._kind_for(served)
        if kind == "plain" and served.whole:
            served = Served(served.id, served.whole)
        key = self._key(served, kind)
        engine = self.engines.get(key)
        if engine is not None and engine.ready.is_set() and engine.error:
            del self.engines[key]  # failed: this request hears why, the next one starts it again
            raise EngineRefused(503, engine.error)
        if engine is None:
            needed = engine_estimate_gb(served, kind, gpu=self.gpu)
            self._room_make(needed, for_what=served.id)
            if kind == "vllm":
                engine = VLLMEngine(served, needed, gpu=self.gpu, loras=self.loras)
            else:
                engine = PlainEngine(served, needed)
            self.engines[key] = engine
        self.engines.move_to_end(key)
        engine.last_used = time.monotonic()
        return engine

    def _room_make(self, needed: float, *, for_what: str) -> None:
        if needed > self.memory_gb:
            raise EngineRefused(
                503,
                f"an engine for {for_what} needs about {needed:.1f} GiB; the engines' memory budget is "
                f"{self.memory_gb:.1f} GiB (generation_server --memory-gb)",
            )
        while sum(e.memory_gb for e in self.engines.values()) + needed > self.memory_gb:
            idle = [k for k, e in self.engines.items() if e.busy == 0 and e.ready.is_set()]
            if not idle:
                raise EngineRefused(
                    503,
                    f"the engines' memory budget ({self.memory_gb:.1f} GiB) is held by engines answering or "
                    f"starting now; {for_what} can start when one is free: try again in a moment",
                )
            stopped = self.engines.pop(idle[0])  # the least recently used
            logger.info(
                "stopping the %s engine for %s to make room for %s", stopped.kind, stopped.key, for_what
            )
            stopped.stop()

    def acquire(self, model: str) -> tuple[Engine, Served]:
        """The engine for ``model``, counted busy until ``release``: it is not stopped meanwhile."""
        served = self._served(model)
        with self.lock:
            engine = self._engine(served)
            engine.busy += 1
        return engine, served

    def release(self, engine: Engine) -> None:
        with self.lock:
            engine.busy -= 1
            engine.last_used = time.monotonic()

    def warm(self, model: str) -> str:
        """Start ``model``'s engine (and load its adapter) without waiting: its status now."""
        engine, served = self.acquire(model)
        status = "failed" if engine.error else "ready" if engine.ready.is_set() else "starting"

        def load() -> None:
            try:
                engine.ready.wait(self.start_timeout)
                if engine.ready.is_set() and not engine.error:
                    engine.model_for(served)
            except Exception:
                logger.exception("warming %s", model)
            finally:
                self.release(engine)

        threading.Thread(target=load, name=f"warm {model}", daemon=True).start()
        return status

    def status(self) -> list[dict[str, Any]]:
        """Each engine: its kind, what it serves, whether it is ready, busy, and its memory."""
        with self.lock:
            engines = list(self.engines.values())
        return [
            {
                "kind": e.kind,
                "engine": e.key,
                "status": "failed" if e.error else "ready" if e.ready.is_set() else "starting",
                "busy": e.busy,
                "memory_gb": round(e.memory_gb, 2),
                "adapters": sorted(getattr(e, "adapters", {})),
                # a ready vLLM engine's own server: batch work on this machine samples from it
                "url": e.server.url if isinstance(e, VLLMEngine) and e.ready.is_set() and e.server else "",
            }
            for e in engines
        ]

    def ready_models(self) -> list[str]:
        """The model ids that answer at once: each ready engine's base, and adapters loaded in it."""
        names: list[str] = []
        with self.lock:
            engines = list(self.engines.values())
        for e in engines:
            if e.ready.is_set() and not e.error:
                names.extend(e.answers())
        return names

    def close(self) -> None:
        with self.lock:
            engines, self.engines = list(self.engines.values()), OrderedDict()
        for engine in engines:
            engine.stop()
