"""The arena's live answers under load: time to first token and tokens/s per stream with 1, 4 and 8
concurrent arena users on this machine, the embedded SmolLM2 answering. Each user sends a turn (two
answers stream at once, as the arena's two cards do), waits for both, then sends the next; ``--turns``
turns each. The streams are read as the web process relays them (``generation.streaming.chat_stream``)
from the generation server (``manage.py generation_server``, its own process, with its vLLM engine, or
``--engine plain``: transformers' ``generate``, one answer at a time) and, with ``--vllm``, from a vLLM
server on the same model reached directly (``make vllm``): what the supervisor's relay costs.

    python benchmarks/arena.py                 # the generation server (vLLM engine)
    python benchmarks/arena.py --vllm          # and vLLM reached directly, in the same run
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SERVER = """
import sys
from generation.server import serve_until_stopped, server_make
from generation.engines import Served
server = server_make(
    host="127.0.0.1", port=int(sys.argv[1]), resolve=lambda m: Served(m, m), engine=sys.argv[2], memory_gb=16
)
serve_until_stopped(server)  # its engines stop with it
"""


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _questions() -> list[str]:
    lines = (ROOT / "annotate/demo/prompts.jsonl").read_text(encoding="utf-8").splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return [row["prompt"] if "prompt" in row else row["messages"][-1]["content"] for row in rows]


def _stream(url: str, model: str, text: str, max_new_tokens: int, out: list[dict]) -> None:
    from generation.backends import Sampling
    from generation.streaming import chat_stream

    started = time.perf_counter()
    first = None
    tokens = 0
    finish = None
    for piece in chat_stream(
        url=url,
        model=model,
        messages=[{"role": "user", "content": text}],
        sampling=Sampling(samples=1, temperature=0.7, top_p=0.9, max_new_tokens=max_new_tokens),
        stop=threading.Event(),
        timeout=600,
    ):
        if piece.text and first is None:
            first = time.perf_counter()
        if piece.finish_reason is not None:
            tokens, finish = piece.tokens or 0, piece.finish_reason
    ended = time.perf_counter()
    out.append(
        {
            "ttft": (first or ended) - started,
            "tokens": tokens,
            "rate": tokens / max(1e-9, ended - (first or started)),
            "seconds": ended - started,
            "finish": finish,
        }
    )


def _user(
    url: str, model: str, questions: list[str], turns: int, offset: int, max_new: int, out: list[dict]
) -> None:
    for turn in range(turns):
        text = questions[(offset * turns + turn) % len(questions)]
        pair = [threading.Thread(target=_stream, args=(url, model, text, max_new, out)) for _ in range(2)]
        for thread in pair:
            thread.start()
        for thread in pair:
            thread.join()


def _long_text(model: str, tokens: int) -> str:
    """A prompt of about ``tokens`` tokens of the model's tokenizer (the demo questions, repeated)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    text = ""
    while len(tokenizer(text)["input_ids"]) < tokens:
        text += " ".join(_questions()) + "\n"
    return tokenizer.decode(tokenizer(text)["input_ids"][:tokens])


def _heavy(url: str, model: str, text: str, done: threading.Event, out: list[dict]) -> None:
    """One user who sends the long prompt again and again until the others are done."""
    while not done.is_set():
        _stream(url, model, text, 16, out)


def _run(url: str, model: str, users: int, turns: int, max_new: int, long_text: str = "") -> dict:
    out: list[dict] = []
    heavy: list[dict] = []
    questions = _questions()
    started = time.perf_counter()
    threads = [
        threading.Thread(target=_user, args=(url, model, questions, turns, i, max_new, out))
        for i in range(users)
    ]
    done = threading.Event()
    if long_text:  # its first prompt is in flight before the others start
        threading.Thread(target=_heavy, args=(url, model, long_text, done, heavy), daemon=True).start()
        time.sleep(0.2)
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    done.set()
    wall = time.perf_counter() - started
    ttft = sorted(s["ttft"] for s in out)
    return {
        "users": users,
        "streams": len(out),
        "ttft_p50": statistics.median(ttft),
        "ttft_p95": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))],
        "rate_p50": statistics.median(s["rate"] for s in out),
        "tokens_per_s_all": sum(s["tokens"] for s in out) / wall,
        "mean_tokens": statistics.mean(s["tokens"] for s in out),
        "cut_off": sum(s["finish"] == "length" for s in out),
        "wall": wall,
        "long_prompts": len(heavy),
    }


def _report(engine: str, rows: list[dict]) -> None:
    print(f"\n{engine}")
    print(
        "users streams  TTFT p50  TTFT p95  tokens/s per stream (p50)  tokens/s all  tokens/answer  cut off"
    )
    for r in rows:
        print(
            f"{r['users']:>5} {r['streams']:>7}  {r['ttft_p50']:7.2f}s  {r['ttft_p95']:7.2f}s  "
            f"{r['rate_p50']:25.1f}  {r['tokens_per_s_all']:11.1f}  {r['mean_tokens']:13.0f}  {r['cut_off']:>7}"
            + (f"  (long prompts read meanwhile: {r['long_prompts']})" if r["long_prompts"] else "")
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, nargs="*", default=[1, 4, 8])
    parser.add_argument("--turns", type=int, default=3, help="turns each user sends, one after another")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="the arena's default cap")
    parser.add_argument("--engine", choices=["vllm", "plain"], default="vllm", help="the generation server's")
    parser.add_argument("--vllm", action="store_true", help="also a vLLM server reached directly (make vllm)")
    parser.add_argument(
        "--long-prompt",
        type=int,
        default=0,
        help="one more user sends a prompt of this many tokens, again and again",
    )
    parser.add_argument(
        "--variants",
        nargs="*",
        help="one run of the generation server per variant, each KEY=VALUE[,KEY=VALUE] of its environment "
        "(e.g. PREFLOOP_ENGINE_PRIORITY=0 PREFLOOP_ENGINE_PRIORITY=1)",
    )
    args = parser.parse_args()
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    os.environ.setdefault("DEBUG", "1")
    from generation.embedded import embedded_materialise

    model = str(embedded_materialise())
    print(
        f"arena load: {os.cpu_count()} CPU cores, {model}, up to {args.max_new_tokens} new tokens, "
        f"{args.turns} turns per user, two answers per turn"
    )
    long_text = _long_text(model, args.long_prompt) if args.long_prompt else ""
    if long_text:
        print(f"one more user sends a {args.long_prompt}-token prompt again and again (16 new tokens each)")
    for variant in args.variants or [""]:
        env = {**os.environ, **dict(pair.split("=", 1) for pair in variant.split(",") if pair)}
        port = _free_port()
        server = subprocess.Popen([sys.executable, "-c", SERVER, str(port), args.engine], cwd=ROOT, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            import httpx

            for _ in range(600):
                try:
                    if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            started = time.perf_counter()
            _run(url, model, 1, 1, 16)  # starts the engine: not measured
            print(
                f"\ngeneration server's {args.engine} engine answered first after {time.perf_counter() - started:.0f} s"
            )
            name = f"generation server ({args.engine} engine{', ' + variant if variant else ''})"
            _report(
                name, [_run(url, model, n, args.turns, args.max_new_tokens, long_text) for n in args.users]
            )
        finally:
            server.terminate()
            server.wait(timeout=60)
    if args.vllm:
        from generation.backends import ModelSpec
        from generation.backends.vllm import VLLMServer

        started = time.perf_counter()
        vllm = VLLMServer(ModelSpec(model))
        print(f"\nvLLM server started in {time.perf_counter() - started:.0f} s")
        try:
            _run(vllm.url, model, 1, 1, 16)
            _report(
                "vLLM server", [_run(vllm.url, model, n, args.turns, args.max_new_tokens) for n in args.users]
            )
        finally:
            vllm.stop()
    print(f"\n(python benchmarks/arena.py {' '.join(sys.argv[1:])})")


if __name__ == "__main__":
    main()
