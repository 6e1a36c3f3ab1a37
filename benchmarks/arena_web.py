"""The arena through the whole web path beside annotators judging: does a stream cost the others?

A stub engine (benchmarks/stub_engine.py: 64 pieces at 30 a second after 0.05 s, whatever is asked)
answers, so what is measured is the web tier: the arena runner (``manage.py arena_runner``), the
database, the relay, the pages; on PostgreSQL, `make serve`'s gunicorn settings (DEBUG off). For each
web worker kind (``gthread``: WSGI threads, each stream holds one; ``asgi``: uvicorn's workers, the
relay is asynchronous) and each number of arena users, for --seconds:

- arena users loop: log in, POST a prompt (a new conversation), read the turn's event stream until
  ``done``, vote, and again;
- --annotators annotators judge over the API, one judgment a second each (POST /api/judgments/ with
  next: true).

It prints per row: turns completed (and of them, those whose stream showed no text before the end:
the relay fell behind the whole answer) and failed, the time from the POST to the first answer text on
the stream (p50/p95; the engine's own first piece comes after 0.05 s), a whole turn (p95: the engine
alone takes 64/30 = 2.1 s), and the judging latency (p50/p95).

    python benchmarks/arena_web.py                                   # gthread and asgi; 0, 10, 50, 200
    python benchmarks/arena_web.py --workers asgi --users 0,200 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.databases import ROOT, bench_env, fresh_database, static_collect
from benchmarks.load import django_script, free_port, percentile

PASSWORD = "arena-bench-password"
ENGINE_TTFT = 0.05

SETUP = r"""
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from rest_framework.authtoken.models import Token
from annotate.models import Campaign, Comparison, Task
from annotate.services.campaigns import campaign_arena_pool_set, campaign_create, campaign_get_or_create
from generation.messages import messages_from_text, messages_hash
from generation.models import Policy, Prompt, Response

arena_users, annotators, password = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
User = get_user_model()
hashed = make_password(password)
User.objects.bulk_create(
    [User(username=f"arena{i}", password=hashed) for i in range(arena_users)]
    + [User(username=f"judge{i}", password=hashed) for i in range(annotators)]
)
tokens = [Token.objects.create(user=u).key for u in User.objects.filter(username__startswith="judge")]
pool = [Policy.objects.create(name=f"stub-{i}", location=f"stub/model-{i}") for i in range(2)]
arena = campaign_arena_pool_set(campaign=campaign_create(name="arena", task=Task.ARENA), policies=pool)
judging = campaign_get_or_create(name="judging", overlap=1, gold_rate=0.0, adjudicate=False)
prompts = Prompt.objects.bulk_create(
    [Prompt(text=f"Question {i}?", content_hash=messages_hash(messages_from_text(f"Question {i}?"))) for i in range(3000)]
)
answers = Response.objects.bulk_create(
    [Response(prompt=p, policy=pool[k], text=f"Answer {k} to {p.text}") for p in prompts for k in (0, 1)]
)
Comparison.objects.bulk_create(
    [Comparison(prompt=p, response_a=answers[2 * i], response_b=answers[2 * i + 1], campaign=judging, overlap=1)
     for i, p in enumerate(prompts)]
)
print(json.dumps({"arena": arena.pk, "tokens": tokens}))
"""

TURN = re.compile(r"/annotate/arena/turns/(\d+)/stream/")
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def arena_user(base: str, name: str, arena: int, start: float, stop: float, out: list) -> None:
    """One arena user: new conversation, stream to the end, vote; again until ``stop``."""
    session = requests.Session()
    page = session.get(f"{base}/login/", timeout=60)
    token = CSRF.search(page.text).group(1)
    session.post(
        f"{base}/login/",
        data={"username": name, "password": PASSWORD, "csrfmiddlewaretoken": token},
        timeout=60,
    )
    csrf = {"X-CSRFToken": session.cookies.get("csrftoken", ""), "HX-Request": "true"}
    time.sleep(max(0.0, start - time.time()))
    n = 0
    while time.time() < stop:
        n += 1
        began = time.perf_counter()
        posted = session.post(
            f"{base}/annotate/arena/{arena}/", data={"text": f"{name} asks {n}"}, headers=csrf, timeout=120
        )
        found = TURN.search(posted.text)
        if posted.status_code != 200 or not found:
            out.append(("failed", 0.0, f"start {posted.status_code}"))
            time.sleep(1)
            continue
        turn = found.group(1)
        first = None
        done = False
        with session.get(f"{base}/annotate/arena/turns/{turn}/stream/", stream=True, timeout=120) as stream:
            for line in stream.iter_lines(decode_unicode=True):
                if first is None and line and "answer-text streaming" in line:
                    first = time.perf_counter() - began
                if line == "event: done":
                    done = True
                    break
        whole = time.perf_counter() - began
        vote = session.post(
            f"{base}/annotate/arena/turns/{turn}/vote/", data={"answer": "left"}, headers=csrf, timeout=120
        )
        ok = (
            done and vote.status_code == 200 and "Your vote" in vote.text
        )  # first None: no text before the end
        notice = re.search(r'role="alert"[^>]*>([^<]*)<', vote.text)
        why = f"done={done} vote={vote.status_code} {notice.group(1)[:90] if notice else ''}"
        out.append(("turn", whole, first) if ok else ("failed", whole, why))


def annotator(base: str, token: str, start: float, stop: float, out: list) -> None:
    """One judgment a second over the API, each serving the next."""
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    following = session.post(f"{base}/api/comparisons/next/", timeout=60).json()
    time.sleep(max(0.0, start - time.time()))
    tick = time.time()
    while time.time() < stop and following:
        began = time.perf_counter()
        body = {"comparison": following["comparison"], "verdict": "left", "next": True}
        submit = session.post(f"{base}/api/judgments/", json=body, timeout=60)
        out.append(("judge", time.perf_counter() - began, submit.status_code == 201))
        following = submit.json().get("next") if submit.status_code == 201 else None
        tick += 1.0
        time.sleep(max(0.0, tick - time.time()))


def client_process(jobs: list, start: float, stop: float, queue: mp.Queue) -> None:
    results: list = []
    threads = [threading.Thread(target=target, args=(*args, start, stop, results)) for target, args in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(results)


def run(base: str, setup: dict, users: int, annotators: int, seconds: float, processes: int) -> list:
    jobs = [(arena_user, (base, f"arena{i}", setup["arena"])) for i in range(users)]
    jobs += [(annotator, (base, setup["tokens"][i])) for i in range(annotators)]
    start = time.time() + 3 + users * 0.02  # time to log everyone in
    stop = start + seconds
    queue: mp.Queue = mp.Queue()
    shares = [jobs[i::processes] for i in range(processes)]
    workers = [
        mp.Process(target=client_process, args=(share, start, stop, queue)) for share in shares if share
    ]
    for worker in workers:
        worker.start()
    results = [item for _ in workers for item in queue.get(timeout=seconds + 600)]
    for worker in workers:
        worker.join()
    return results


def wait_up(url: str) -> None:
    for _ in range(300):
        try:
            requests.get(url, timeout=5)
            return
        except requests.RequestException:
            time.sleep(0.2)
    raise SystemExit(f"{url} never answered")


def row(kind: str, users: int, results: list, seconds: float) -> str:
    turns = [r for r in results if r[0] == "turn"]
    failed = [r for r in results if r[0] == "failed"]
    judged = [r[1] for r in results if r[0] == "judge" and r[2]]
    firsts = [r[2] for r in turns if r[2] is not None]
    unstreamed = len(turns) - len(firsts)  # answered, but no text reached the page before the end
    wholes = [r[1] for r in turns]

    def ms(values: list[float], q: float) -> str:
        return f"{percentile(values, q) * 1e3:,.0f}" if values else "–"

    def s(values: list[float], q: float) -> str:
        return f"{percentile(values, q):.2f}" if values else "–"

    failures = f" ({failed[0][2]})" if failed else ""
    return (
        f"| {kind} | {users} | {len(turns)} ({unstreamed} unstreamed) | {len(failed)}{failures} | "
        f"{s(firsts, 50)} / {s(firsts, 95)} | "
        f"{s(wholes, 95)} | {len(judged) / seconds:.1f} | {ms(judged, 50)} / {ms(judged, 95)} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="gthread,asgi")
    parser.add_argument("--users", default="0,10,50,200")
    parser.add_argument("--annotators", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument("--slots", type=int, default=0, help="the runner's slots (default: the most users)")
    args = parser.parse_args()
    users_list = [int(u) for u in args.users.split(",")]
    static_collect()
    print("$ python benchmarks/arena_web.py " + " ".join(sys.argv[1:]))
    print(
        f"PostgreSQL; gunicorn as config/gunicorn.py (DEBUG off); a stub engine (64 pieces at 30/s after "
        f"{ENGINE_TTFT:g} s); {args.annotators} annotators judging once a second; {args.seconds:g} s a row\n"
    )
    print(
        "| web workers | arena users | turns | failed | first text p50 / p95 (s) | whole turn p95 (s) "
        "| judgments/s | judging p50 / p95 (ms) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for kind in args.workers.split(","):
        for users in users_list:
            url = fresh_database("postgresql")
            setup = json.loads(
                django_script(SETUP, bench_env(url), str(max(users, 1)), str(args.annotators), PASSWORD)
            )
            engine_port, web_port = free_port(), free_port()
            engine = subprocess.Popen(
                [
                    str(Path(sys.executable).with_name("uvicorn")),
                    "benchmarks.stub_engine:app",
                    "--port",
                    str(engine_port),
                    "--log-level",
                    "warning",
                ],
                cwd=ROOT,
                env=bench_env(url),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            env = bench_env(
                url,
                PREFLOOP_ARENA_URL=f"http://127.0.0.1:{engine_port}",
                PREFLOOP_ARENA_TURNS_PER_MINUTE="100000",
                PREFLOOP_BIND=f"127.0.0.1:{web_port}",
                PREFLOOP_WEB_WORKER=kind,
                PREFLOOP_ACCESS_LOG="",
            )
            logs = ROOT / "var" / "bench-arena-web"  # each process's errors, for a failed row
            logs.mkdir(parents=True, exist_ok=True)
            runner = subprocess.Popen(
                [sys.executable, "manage.py", "arena_runner", "--slots", str(args.slots or max(users_list))],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(logs / f"runner-{kind}-{users}.log", "w"),
            )
            web = subprocess.Popen(
                [str(Path(sys.executable).with_name("gunicorn")), "-c", "config/gunicorn.py"],
                cwd=ROOT,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=open(logs / f"web-{kind}-{users}.log", "w"),
            )
            base = f"http://127.0.0.1:{web_port}"
            try:
                wait_up(f"{base}/login/")
                wait_up(f"http://127.0.0.1:{engine_port}/v1/models")
                results = run(base, setup, users, args.annotators, args.seconds, args.client_processes)
                print(row(kind, users, results, args.seconds), flush=True)
            finally:
                for process in (web, runner, engine):
                    process.terminate()
                for process in (web, runner, engine):
                    process.wait(timeout=60)


if __name__ == "__main__":
    main()
