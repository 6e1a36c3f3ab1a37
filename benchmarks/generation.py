"""Generation throughput of the transformers and vLLM backends: batched, one prompt at a time, and
8 concurrent single-answer requests (what the arena asks).

    python benchmarks/generation.py                    # CPU: the embedded SmolLM2, float32
    python benchmarks/generation.py --model llama-1b   # GPU: a Llama-3.2-1B-shaped random model, bf16
    python benchmarks/generation.py --no-vllm          # the transformers rows alone

32 prompts x 4 samples. Rows:
- "batched": the backend as ``generate`` uses it (prompts sorted by length, as many per ``generate``
  call as fit, each prompt prefilled once and its KV cache repeated for its 4 samples);
- "batched, every sample prefilled": the same without sharing the prefill (the backend before);
- "one prompt at a time": the backend with one prompt (and its 4 samples) per call;
- "naive loop": plain transformers, what a script would do: for each prompt, ``model.generate`` with
  ``do_sample=True, num_return_sequences=4`` and transformers' own temperature/top-p sampling.
- "8 concurrent requests": 8 clients at once, each asking one answer to its own prompt, 4 times over
  (32 answers): the transformers backend serves them one after another (one model, one lock), vLLM's
  server batches them as they come. Its latency columns are per request, from asking to the last token.
- vLLM rows (when ``make vllm`` built its environment): the server the backend starts (fp32, eager on a
  CPU), with its start-up time on a line of its own; its peak memory is the server's process tree.
tokens/s counts generated tokens; model loading is excluded. The last lines give the speed-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def prompts(n: int) -> list[list[dict[str, str]]]:
    lines = (ROOT / "annotate" / "demo" / "prompts.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines]
    base = [r["messages"] if "messages" in r else [{"role": "user", "content": r["prompt"]}] for r in rows]
    out = []
    for i in range(n):  # vary the wording so no two prompts are the same
        conversation = [dict(m) for m in base[i % len(base)]]
        if i >= len(base):
            conversation[-1]["content"] += f" (variant {i // len(base)})"
        out.append(conversation)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded", help="embedded | llama-1b | a model directory")
    p.add_argument("--prompts", type=int, default=32)
    p.add_argument("--samples", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--skip-naive", action="store_true")
    p.add_argument("--no-vllm", action="store_true", help="leave the vLLM rows out")
    args = p.parse_args()

    import torch

    from benchmarks.dpo import model_dir
    from generation.backends import ModelSpec, Sampling
    from generation.backends.transformers import TransformersBackend

    path = model_dir(args.model, Path("/tmp/prefloop-bench-models"))
    work = prompts(args.prompts)
    sampling = Sampling(
        samples=args.samples, temperature=0.8, top_p=0.95, max_new_tokens=args.max_new_tokens, seed=0
    )
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU ({os.cpu_count()} cores)"
    print(f"command: python benchmarks/generation.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"model: {args.model} ({path}), device: {device}, torch {torch.__version__}")
    print(
        f"{args.prompts} prompts x {args.samples} samples, max {args.max_new_tokens} new tokens, T=0.8 top-p 0.95"
    )

    rows = []
    modes = [("batched", None, True), ("batched, every sample prefilled", None, False)]
    if not args.skip_naive:
        modes.append(("one prompt at a time", 1, True))
    for label, batch_size, prefill_once in modes:
        backend = TransformersBackend(ModelSpec(path), batch_size=batch_size, prefill_once=prefill_once)
        backend.generate(work[:1], Sampling(samples=1, max_new_tokens=4))  # warm-up
        started = time.perf_counter()
        results = backend.generate(work, sampling)
        elapsed = time.perf_counter() - started
        tokens = sum(c.token_count for r in results for c in r)
        rows.append((label, elapsed, len(work) / elapsed, tokens / elapsed, None))
        if not args.skip_naive and batch_size is None and prefill_once:
            naive = naive_loop(backend, work, sampling)
            concurrent = ("8 concurrent requests", *concurrent_requests(backend, work, sampling))
        del backend
    if not args.skip_naive:
        rows += [(*naive, None), concurrent]
    transformers_peak = peak_rss_mib()
    vllm_rows, startup, vllm_peak = ([], None, None) if args.no_vllm else vllm_measure(path, work, sampling)
    print(f"{'mode':<40}{'seconds':>9}{'prompts/s':>11}{'tokens/s':>10}  latency p50/p95 s")
    for label, elapsed, pps, tps, latency in rows + vllm_rows:
        lat = f"  {latency[0]:.1f} / {latency[1]:.1f}" if latency else ""
        print(f"{label:<40}{elapsed:>9.1f}{pps:>11.3f}{tps:>10.1f}{lat}")
    print(f"peak memory: transformers (this process) {transformers_peak:.0f} MiB", end="")
    print(f"; vLLM server (its processes) {vllm_peak:.0f} MiB" if vllm_peak else "")
    if startup is not None:
        print(f"vLLM server start-up (to /health answering): {startup:.1f} s")
    for label, _, _, tps, _ in rows[1:] + vllm_rows:
        print(f"batched vs {label} (tokens/s): {rows[0][3] / tps:.2f}x")
    by_label = {r[0]: r for r in rows + vllm_rows}
    for mode in ("one prompt at a time", "8 concurrent requests"):
        if mode in by_label and f"vLLM {mode}" in by_label:
            print(
                f"vLLM vs transformers, {mode} (tokens/s): {by_label[f'vLLM {mode}'][3] / by_label[mode][3]:.2f}x"
            )


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def concurrent_requests(backend, work, sampling, clients: int = 8):
    """``clients`` threads, each asking one answer at a time to its own prompts (``work`` split among
    them); a backend that cannot serve two at once is taken in turn (a lock). Returns elapsed, prompts/s,
    tokens/s and the per-request latency's p50 and p95."""
    import statistics
    import threading
    from concurrent.futures import ThreadPoolExecutor
    from dataclasses import replace

    one = replace(sampling, samples=1)
    lock = threading.Lock() if backend.name == "transformers" else None
    latencies, tokens = [], []

    def client(prompts):
        for prompt in prompts:
            asked = time.perf_counter()
            if lock is None:
                [[answer]] = backend.generate([prompt], one)
            else:
                with lock:
                    [[answer]] = backend.generate([prompt], one)
            latencies.append(time.perf_counter() - asked)
            tokens.append(answer.token_count)

    started = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(client, [work[i::clients] for i in range(clients)]))
    elapsed = time.perf_counter() - started
    p95 = statistics.quantiles(latencies, n=20)[18]
    return elapsed, len(work) / elapsed, sum(tokens) / elapsed, (statistics.median(latencies), p95)


def vllm_measure(path, work, sampling):
    """The vLLM rows, the server's start-up seconds and its peak memory (MiB, sampled every 0.2 s)."""
    import threading

    from generation.backends import ModelSpec, Sampling
    from generation.backends.vllm import VLLMBackend, vllm_python

    if vllm_python() is None:
        print("vLLM rows left out: no vLLM environment (make vllm)")
        return [], None, None
    started = time.perf_counter()
    backend = VLLMBackend(ModelSpec(str(path)))
    startup = time.perf_counter() - started
    peak, done = [0.0], threading.Event()

    def watch():
        while not done.wait(0.2):
            peak[0] = max(peak[0], tree_rss_mib(backend.server.process.pid))

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    backend.generate(work[:1], Sampling(samples=1, max_new_tokens=4))  # warm-up
    rows = []
    for label, batches in (("vLLM batched", [work]), ("vLLM one prompt at a time", [[w] for w in work])):
        started = time.perf_counter()
        tokens = sum(c.token_count for batch in batches for r in backend.generate(batch, sampling) for c in r)
        elapsed = time.perf_counter() - started
        rows.append((label, elapsed, len(work) / elapsed, tokens / elapsed, None))
    rows.append(("vLLM 8 concurrent requests", *concurrent_requests(backend, work, sampling)))
    done.set()
    watcher.join()
    backend.close()
    return rows, startup, peak[0]


def tree_rss_mib(pid: int) -> float:
    """Resident memory of a process and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            rss[int(entry.name)] = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
            children.setdefault(int(fields[1]), []).append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    total, stack = 0, [pid]
    while stack:
        current = stack.pop()
        total += rss.get(current, 0)
        stack += children.get(current, [])
    return total / 2**20


def naive_loop(backend, work, sampling) -> tuple[str, float, float, float]:
    """One prompt at a time through plain ``model.generate`` (transformers' sampling)."""
    import torch

    model, tokenizer = backend.model, backend.tokenizer
    torch.manual_seed(sampling.seed)
    tokens = 0
    started = time.perf_counter()
    with torch.inference_mode():
        for conversation in work:
            ids = torch.tensor([backend.render(conversation)], device=backend.device)
            out = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=sampling.temperature,
                top_p=sampling.top_p,
                top_k=None,
                num_return_sequences=sampling.samples,
                max_new_tokens=sampling.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=backend.eos_ids,
            )
            new = out[:, ids.shape[1] :]
            ended = torch.isin(new, torch.tensor(backend.eos_ids, device=new.device))
            # tokens up to and including the first EOS (the rest is padding after the row ended)
            tokens += int(torch.where(ended.any(1), ended.int().argmax(1) + 1, new.shape[1]).sum())
    elapsed = time.perf_counter() - started
    return ("naive loop (plain transformers)", elapsed, len(work) / elapsed, tokens / elapsed)


if __name__ == "__main__":
    main()
