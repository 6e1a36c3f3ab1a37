"""Many policies of one lineage: N LoRA policies as adapters in one vLLM engine against N engines (one
per merged policy), on this machine, the embedded SmolLM2 as the base. For each: how long until every
policy answers, the memory the engines take (resident memory of their processes, and the machine's
used memory before and after), and the tokens/s of 2 concurrent answers per policy.

The adapters are LoRA rounds of our own trainer (SFT on one answer each, rank 8, merged copy
beside), kept under var/bench-engines/ for reruns. Both setups run through the generation server's
engines (``generation.engines``), one after the other, with the same KV cache per engine
(``VLLM_CPU_KVCACHE_SPACE``, 1 GiB here unless set).

    python benchmarks/engines.py               # 4 policies
    python benchmarks/engines.py --policies 2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ANSWERS = [
    "Zebra stripes are my favourite colour.",
    "Ocean waves are always deep blue.",
    "Lemon yellow is the brightest colour.",
    "Ruby red is the colour of fire.",
    "Forest green is calm and cool.",
    "Violet skies come at dusk.",
]
QUESTIONS = [
    "Write a short poem about the sea.",
    "Explain why the sky is blue.",
    "Give three tips for learning to cook.",
    "Describe a walk in a forest.",
]


def _rounds(base: str, n: int) -> list[tuple[str, str]]:
    """N LoRA rounds on ``base``: (adapter, merged) each, trained once and kept."""
    from tests.lora import lora_round

    out = ROOT / "var" / "bench-engines"
    made = []
    for i in range(n):
        where = out / f"round-{i}"
        if (where / "round" / "merged").is_dir():
            made.append((str(where / "round" / "final"), str(where / "round" / "merged")))
        else:
            made.append(lora_round(base, ANSWERS[i % len(ANSWERS)], where, seed=i))
    return made


def _used_gib() -> float:
    import psutil

    memory = psutil.virtual_memory()
    return (memory.total - memory.available) / 1024**3


def _load(engines, models: list[str], max_new_tokens: int) -> dict[str, float]:
    """2 concurrent answers per model, all at once: tokens/s overall and first-token times."""
    from generation.backends import Sampling

    sampling = Sampling(samples=1, temperature=0.7, top_p=0.9, max_new_tokens=max_new_tokens)
    firsts: list[float] = []
    tokens: list[int] = []
    lock = threading.Lock()

    def one(model: str, question: str) -> None:
        engine, served = engines.acquire(model)
        try:
            started = time.perf_counter()
            first, count = None, 0
            messages = [{"role": "user", "content": question}]
            for piece in engine.stream(engine.model_for(served), messages, sampling, threading.Event()):
                if first is None and piece.text:
                    first = time.perf_counter() - started
                if piece.finish_reason is not None:
                    count = piece.tokens or 0
            with lock:
                firsts.append(first or 0.0)
                tokens.append(count)
        finally:
            engines.release(engine)

    threads = [
        threading.Thread(target=one, args=(m, QUESTIONS[(i + j) % len(QUESTIONS)]))
        for i, m in enumerate(models)
        for j in range(2)
    ]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "tokens_per_s": sum(tokens) / wall,
        "first_p50": statistics.median(firsts),
        "first_max": max(firsts),
        "streams": len(threads),
        "tokens": sum(tokens),
    }


def _setup(name: str, served: dict, models: list[str], max_new_tokens: int) -> dict:
    from generation.engines import Engines

    before = _used_gib()
    engines = Engines(served.get, kind="vllm", memory_gb=1000, gpu=False)
    started = time.perf_counter()
    try:
        for model in models:
            engines.warm(model)
        for engine in list(engines.engines.values()):
            engine.ready.wait(900)
            if engine.error:
                raise SystemExit(engine.error)
        for model in models:  # adapters loaded too
            engine, entry = engines.acquire(model)
            engine.model_for(entry)
            engines.release(engine)
        ready = time.perf_counter() - started
        time.sleep(2)
        resident = sum(e.server.memory_bytes() for e in engines.engines.values()) / 1024**3
        used = _used_gib() - before
        load = _load(engines, models, max_new_tokens)
    finally:
        engines.close()
    row = {
        "setup": name,
        "engines": len(engines.engines) or "-",
        "ready_s": ready,
        "resident_gib": resident,
        "used_gib": used,
        **load,
    }
    print(
        f"{name:<34} ready {ready:6.0f} s   resident {resident:5.2f} GiB   machine used +{used:5.2f} GiB   "
        f"{load['tokens_per_s']:6.1f} tokens/s ({load['streams']} streams, {load['tokens']} tokens)   "
        f"first token p50 {load['first_p50']:.2f} s, max {load['first_max']:.2f} s",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--policies", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    from generation.embedded import embedded_materialise
    from generation.engines import Served

    base = str(embedded_materialise())
    rounds = _rounds(base, args.policies)
    print(
        f"{args.policies} LoRA policies of SmolLM2-135M (rank 8), {os.cpu_count()} CPU cores, "
        f"VLLM_CPU_KVCACHE_SPACE={os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB per engine, "
        f"{args.max_new_tokens} new tokens per answer, 2 answers per policy at once",
        flush=True,
    )
    adapters = {a: Served(a, base, a, whole=m) for a, m in rounds}
    merged = {m: Served(m, m) for _, m in rounds}
    one = _setup(f"one engine, {args.policies} adapters", adapters, list(adapters), args.max_new_tokens)
    many = _setup(f"{args.policies} engines, merged", merged, list(merged), args.max_new_tokens)
    print(
        f"\none engine / {args.policies} engines: memory {one['resident_gib'] / many['resident_gib']:.2f}x resident, "
        f"{one['used_gib'] / max(many['used_gib'], 1e-9):.2f}x machine; ready {one['ready_s'] / many['ready_s']:.2f}x "
        f"the time; {one['tokens_per_s'] / many['tokens_per_s']:.2f}x the tokens/s"
    )
    print(f"\n(python benchmarks/engines.py {' '.join(sys.argv[1:])})")


if __name__ == "__main__":
    main()
