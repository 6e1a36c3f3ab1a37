"""Load: annotators judging against `make serve`'s web process (gunicorn, DEBUG off) on PostgreSQL and
on SQLite, with the clients on the same machine.

For each database and each fill of the campaign (2,000 open comparisons; 100,000 of which 90% are
already complete, ahead of the open ones in id order; each open one wants --overlap judgments, so
the fastest phase does not run out of them; beside it, an earlier round's closed campaign of 2,000
comparisons with 6,000 judgments by 30 other annotators and their leases, as a deployment that has
run rounds holds), four phases of --seconds each:

- floor: the clients make two minimal authenticated API requests per iteration (GET /api/judgments/,
  their own judgments: none);
- saturation, one call: --annotators clients with no pause loop "submit the judgment and get the
  next one" over the API in one request (POST /api/judgments/ with next: true) or, for --htmx-share
  of them, through the judging page (one htmx POST /annotate/judge/ that answers with the next);
- saturation, two calls: the same, the API clients in two requests (POST /api/judgments/, then POST
  /api/comparisons/next/);
- human pace: --pace-annotators clients (one call) that each pause a random time (exponential, mean
  --think seconds) between judgments.

It prints judgments/s, p50/p95/p99 of "submit and get the next" (ms), the ratio to the floor, and after
each phase the invariants: every acknowledged submit is stored, no comparison beyond its overlap,
nobody served one comparison twice.
Between phases the campaign is reset: its human judgments and leases deleted, its comparisons
reopened, then (PostgreSQL) VACUUM ANALYZE.

``--phases`` picks among them (the floor always runs); ``--as-imported`` gives each open comparison an
imported judgment beside the ones wanted, in a campaign with the defaults ``import_preferences`` gives
(gold rate, adjudication).

    python benchmarks/load.py                      # everything (about 15 minutes on 2 cores)
    python benchmarks/load.py --databases postgresql --fills 2000 --seconds 20
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import re
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.databases import ROOT, bench_env, fresh_database, static_collect

PASSWORD = "load-test-password"

SETUP = r"""
import json, sys
import django
django.setup()
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.db import transaction
from rest_framework.authtoken.models import Token
from datetime import timedelta
from django.utils import timezone
from annotate.models import Assignment, Campaign, CampaignStatus, Choice, Comparison, Judgment, Side, Source
from annotate.services.campaigns import campaign_get_or_create
from annotate.services.judgments import import_user
from generation.messages import messages_from_text, messages_hash
from generation.models import Prompt, Response

total, open_, users, overlap = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[5])
imported = sys.argv[6] == "imported"  # each open comparison already holds an imported judgment
complete = total - open_
if imported:  # as import_preferences --overlap makes it: the campaign's defaults (gold rate, adjudication)
    overlap += 1
    campaign = campaign_get_or_create(name="load", overlap=overlap)
else:
    campaign = campaign_get_or_create(name="load", overlap=overlap, gold_rate=0.0, adjudicate=False)
importer = import_user()
B = 5000
with transaction.atomic():
    for start in range(0, total, B):
        n = min(B, total - start)
        prompts = Prompt.objects.bulk_create([
            Prompt(text=f"Load prompt {i}: which answer is better?", content_hash=messages_hash(messages_from_text(f"Load prompt {i}: which answer is better?")))
            for i in range(start, start + n)
        ])
        responses = Response.objects.bulk_create([
            Response(prompt=p, text=f"{side} answer to {p.text} " + "words " * 40)
            for p in prompts for side in ("A first", "A second")
        ])
        comparisons = Comparison.objects.bulk_create([
            Comparison(
                prompt=p, response_a=responses[2 * k], response_b=responses[2 * k + 1], campaign=campaign,
                overlap=1 if start + k < complete else overlap,
                judgment_count=1 if start + k < complete or imported else 0, needs_judgments=start + k >= complete,
            )
            for k, p in enumerate(prompts)
        ])
        Judgment.objects.bulk_create([
            Judgment(comparison=c, annotator=importer, choice=Choice.FIRST, first_choice=Choice.FIRST, source=Source.IMPORTED)
            for k, c in enumerate(comparisons) if start + k < complete or imported
        ])
    hashed = make_password(sys.argv[4])
    people = get_user_model().objects.bulk_create([get_user_model()(username=f"ann{i}", password=hashed) for i in range(users)])
    tokens = Token.objects.bulk_create([Token(user=u, key=Token.generate_key()) for u in people])
    # A deployment that has run rounds: an earlier campaign, closed, judged by earlier annotators (not
    # the clients: the floor's request and their own queries read what they read without it). The
    # tables the queue reads are never empty in use; emptied and analysed (as the reset between phases
    # would leave them without this), PostgreSQL plans scans of them that the gunicorn workers'
    # prepared statements keep while the tables grow (docs/benchmarks.md, 2026-12-07).
    before = get_user_model().objects.bulk_create(
        [get_user_model()(username=f"earlier{i}", password=hashed) for i in range(30)]
    )
    earlier = campaign_get_or_create(name="earlier round", overlap=3, gold_rate=0.0, adjudicate=False)
    history = 2000
    prompts = Prompt.objects.bulk_create([
        Prompt(text=f"Earlier prompt {i}", content_hash=messages_hash(messages_from_text(f"Earlier prompt {i}")))
        for i in range(history)
    ])
    responses = Response.objects.bulk_create([
        Response(prompt=p, text=f"{side} earlier answer " + "words " * 40) for p in prompts for side in ("one", "two")
    ])
    comparisons = Comparison.objects.bulk_create([
        Comparison(prompt=p, response_a=responses[2 * k], response_b=responses[2 * k + 1], campaign=earlier,
                   overlap=3, judgment_count=3, needs_judgments=False)
        for k, p in enumerate(prompts)
    ])
    served = timezone.now() - timedelta(days=7)
    judges = [(c, before[(3 * k + j) % len(before)]) for k, c in enumerate(comparisons) for j in range(3)]
    Judgment.objects.bulk_create([
        Judgment(comparison=c, annotator=u, choice=Choice.FIRST, first_choice=Choice.FIRST, source=Source.HUMAN)
        for c, u in judges
    ])
    Assignment.objects.bulk_create([
        Assignment(comparison=c, annotator=u, left=Side.FIRST, served_at=served, expires_at=served) for c, u in judges
    ])
    Judgment.objects.filter(comparison__campaign=earlier).update(created_at=served)
    Campaign.objects.filter(pk=earlier.pk).update(status=CampaignStatus.CLOSED)
from django.db import connection
if connection.vendor == "postgresql":
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE")  # statistics for the planner after a bulk load, as autovacuum would
print(json.dumps([[u.username, t.key] for u, t in zip(people, tokens)]))
"""

CHECK = r"""
import json, sys
import django
django.setup()
from django.db import connection
from django.db.models import Count, F
from annotate.models import Assignment, Comparison, Judgment, Source
# the phase's campaign only (the earlier round's judgments and leases stay, as in a deployment)
human = Judgment.objects.filter(source=Source.HUMAN, comparison__campaign__name="load")
comparisons = Comparison.objects.filter(campaign__name="load")
leases = Assignment.objects.filter(comparison__campaign__name="load")
acked = {tuple(x) for x in json.load(open(sys.argv[1]))}
stored = set(human.values_list("annotator__username", "comparison_id"))
over_count = comparisons.filter(judgment_count__gt=F("overlap")).count()
over_real = comparisons.annotate(n=Count("judgments")).filter(n__gt=F("overlap")).count()
twice = leases.values("comparison", "annotator").annotate(n=Count("*")).filter(n__gt=1).count()
print(json.dumps({"acknowledged": len(acked), "stored": len(stored), "lost": len(acked - stored),
                  "unacknowledged": len(stored - acked), "over_overlap": over_count + over_real, "served_twice_db": twice}))
if sys.argv[2] == "reset":
    judged = list(human.values_list("comparison_id", flat=True))
    human.delete()
    leases.delete()
    for start in range(0, len(judged), 5000):
        Comparison.objects.filter(pk__in=judged[start:start + 5000]).update(
            judgment_count=int(sys.argv[3]), overlap=int(sys.argv[4]), needs_judgments=True
        )
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            # the deleted rows cleared now, not by an autovacuum in the middle of the next phase
            cursor.execute("VACUUM (ANALYZE)")
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def django_script(script: str, env: dict[str, str], *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(result.stderr[-3000:])
    return result.stdout.strip().splitlines()[-1]


# -- the clients ------------------------------------------------------------------------------


def api_client(base: str, token: str, mode: str, start: float, stop: float, think: float, out: list) -> None:
    """An annotator over the API. ``one call``: POST /api/judgments/ with next: true serves the next
    comparison in the same request; ``two calls``: then POST /api/comparisons/next/."""
    session = requests.Session()
    session.headers["Authorization"] = f"Token {token}"
    if mode == "floor":
        time.sleep(max(0.0, start - time.time()))
        while time.time() < stop:
            began = time.perf_counter()
            ok = all(session.get(f"{base}/api/judgments/", timeout=60).status_code == 200 for _ in range(2))
            out.append(("floor", time.perf_counter() - began, ok, None))
        return
    one_call = mode == "one call"
    served: list[int] = []
    response = session.post(f"{base}/api/comparisons/next/", timeout=60)  # before the window opens
    following = response.json() if response.status_code == 200 else None
    time.sleep(max(0.0, start - time.time()))
    while time.time() < stop and following:
        comparison = following["comparison"]
        served.append(comparison)
        if think:
            time.sleep(random.expovariate(1 / think))
            if time.time() >= stop:  # the window closed while this annotator was reading
                break
        began = time.perf_counter()
        body = {"comparison": comparison, "verdict": "left", "next": one_call}
        submit = session.post(f"{base}/api/judgments/", json=body, timeout=60)
        if one_call:
            following = submit.json().get("next") if submit.status_code == 201 else None
        else:
            response = session.post(f"{base}/api/comparisons/next/", timeout=60)
            following = response.json() if response.status_code == 200 else None
        stored = submit.status_code == 201
        out.append(("judge", time.perf_counter() - began, stored, comparison if stored else None))
        if not stored:
            out.append(("error", 0.0, False, f"submit {submit.status_code}"))
    out.append(("served", 0.0, True, served))


COMPARISON_ID = re.compile(r'name="comparison" value="(\d+)"')
CSRF = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')


def htmx_client(
    base: str, username: str, mode: str, start: float, stop: float, think: float, out: list
) -> None:
    """An annotator on the judging page: logs in (before the window opens), then each judgment is one
    htmx POST /annotate/judge/ answered with the next comparison."""
    session = requests.Session()
    page = session.get(f"{base}/login/", timeout=60)
    token = CSRF.search(page.text)
    if token is None:
        raise RuntimeError(f"GET /login/ answered {page.status_code} with no login form")
    session.post(
        f"{base}/login/",
        data={
            "username": username,
            "password": PASSWORD,
            "csrfmiddlewaretoken": token.group(1),
        },
        headers={"Referer": f"{base}/login/"},
        timeout=60,
    )
    page = session.get(f"{base}/annotate/", timeout=60)
    headers = {
        "HX-Request": "true",
        "X-CSRFToken": session.cookies.get("csrftoken"),
        "Referer": f"{base}/annotate/",
    }
    served: list[int] = []
    found = COMPARISON_ID.search(page.text)
    time.sleep(max(0.0, start - time.time()))
    while time.time() < stop and found:
        comparison = int(found.group(1))
        served.append(comparison)
        if think:
            time.sleep(random.expovariate(1 / think))
            if time.time() >= stop:  # the window closed while this annotator was reading
                break
        began = time.perf_counter()
        response = session.post(
            f"{base}/annotate/judge/",
            data={"comparison": comparison, "answer": "left"},
            headers=headers,
            timeout=60,
        )
        ok = response.status_code == 200 and "Recorded on the previous comparison" in response.text
        out.append(("judge", time.perf_counter() - began, ok, comparison if ok else None))
        if not ok:
            out.append(("error", 0.0, False, f"htmx {response.status_code}"))
        found = COMPARISON_ID.search(response.text)
    out.append(("served", 0.0, True, served))


def client_process(
    base: str, people: list, mode: str, start: float, seconds: float, think: float, htmx: set, queue
) -> None:
    results: list[tuple] = []
    threads = []
    for username, token in people:
        target, who = (htmx_client, username) if mode != "floor" and username in htmx else (api_client, token)
        args = (base, who, mode, start, start + seconds, think)
        threads.append(threading.Thread(target=_collect, args=(target, args, username, results)))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    queue.put(results)


def _collect(target, args: tuple, username: str, results: list) -> None:
    """Run one client; its rows, tagged with its username, join the process's results."""
    mine: list = []
    try:
        target(*args, mine)
    except Exception as exc:  # a client that failed: counted, not hidden
        mine.append(("error", 0.0, False, f"{type(exc).__name__}: {exc}"))
    results.extend((kind, latency, ok, value, username) for kind, latency, ok, value in mine)


def run_phase(
    base: str, people: list, mode: str, seconds: float, think: float, htmx: set, processes: int
) -> list:
    """Clients log in and take their first comparison, then all start together when the window opens
    (logins hash a password: done before, they would weigh on the first seconds)."""
    start = time.time() + 4 + 0.5 * len(htmx)
    queue: mp.Queue = mp.Queue()
    chunks = [people[i::processes] for i in range(processes)]
    workers = [
        mp.Process(target=client_process, args=(base, chunk, mode, start, seconds, think, htmx, queue))
        for chunk in chunks
        if chunk
    ]
    for worker in workers:
        worker.start()
    results = [row for _ in workers for row in queue.get()]
    for worker in workers:
        worker.join()
    return results


def percentile(values: list[float], q: float) -> float:
    return (
        statistics.quantiles(values, n=100, method="inclusive")[q - 1]
        if len(values) > 1
        else (values or [0.0])[0]
    )


def summarise(results: list, seconds: float, htmx: frozenset[str] = frozenset()) -> dict:
    judged = [r for r in results if r[0] == "judge" and r[2]]
    latencies = [r[1] * 1000 for r in judged]
    on_page = [r[1] * 1000 for r in judged if r[4] in htmx]
    over_api = [r[1] * 1000 for r in judged if r[4] not in htmx]
    errors = [r[3] for r in results if r[0] == "error"]
    served_twice = 0
    for row in results:
        if row[0] == "served":
            served_twice += len(row[3]) - len(set(row[3]))
    floor = [r for r in results if r[0] == "floor" and r[2]]
    return {
        "rate": len(judged) / seconds,
        "floor_rate": len(floor) / seconds,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "p99": percentile(latencies, 99),
        "api p50": percentile(over_api, 50),
        "api p95": percentile(over_api, 95),
        "page p50": percentile(on_page, 50),
        "page p95": percentile(on_page, 95),
        "acked": [[r[4], r[3]] for r in judged],
        "errors": errors,
        "served_twice_client": served_twice,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--databases", default="postgresql,sqlite")
    parser.add_argument(
        "--fills", default="2000,100000", help="comparisons in the campaign (the larger: 90%% complete)"
    )
    parser.add_argument("--annotators", type=int, default=50)
    parser.add_argument("--pace-annotators", type=int, default=300)
    parser.add_argument("--think", type=float, default=10.0)
    parser.add_argument("--htmx-share", type=float, default=0.1)
    parser.add_argument("--seconds", type=float, default=20.0)  # 2,000 open comparisons last longer
    parser.add_argument("--overlap", type=int, default=2, help="judgments each open comparison wants")
    parser.add_argument("--web-workers", type=int, default=4)
    parser.add_argument(
        "--web-worker",
        default="gthread",
        choices=["gthread", "asgi"],
        help="gunicorn's kind (PREFLOOP_WEB_WORKER)",
    )
    parser.add_argument("--client-processes", type=int, default=4)
    parser.add_argument(
        "--as-imported",
        action="store_true",
        help="each open comparison already holds an imported judgment (--overlap more wanted), in a campaign "
        "with the defaults import_preferences gives it (gold rate, adjudication)",
    )
    parser.add_argument(
        "--phases",
        default="one,two,human",
        help="of one (call), two (calls), human (pace); the floor always runs",
    )
    args = parser.parse_args()
    static_collect()
    print("$ python benchmarks/load.py " + " ".join(sys.argv[1:]))
    print(
        f"gunicorn {args.web_workers} {args.web_worker} workers (DEBUG off); {args.annotators} annotators with no pause "
        f"({args.htmx_share:.0%} through the htmx page), {args.pace_annotators} at a human pace "
        f"(mean {args.think:g} s between judgments); {args.seconds:g} s per phase; clients on the same machine"
    )
    failed = False
    for kind in args.databases.split(","):
        for fill in [int(f) for f in args.fills.split(",")]:
            open_ = fill if fill <= 2000 else fill // 10
            url = fresh_database(kind)
            env = bench_env(url)
            people = json.loads(
                django_script(
                    SETUP,
                    env,
                    str(fill),
                    str(open_),
                    str(max(args.annotators, args.pace_annotators)),
                    PASSWORD,
                    str(args.overlap),
                    "imported" if args.as_imported else "plain",
                )
            )
            port = free_port()
            server = subprocess.Popen(
                [str(Path(sys.executable).with_name("gunicorn")), "-c", "config/gunicorn.py"],
                cwd=ROOT,
                env=bench_env(
                    url,
                    PREFLOOP_BIND=f"127.0.0.1:{port}",
                    WEB_CONCURRENCY=str(args.web_workers),
                    PREFLOOP_WEB_WORKER=args.web_worker,
                    PREFLOOP_ACCESS_LOG="",
                ),
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{port}"
            for _ in range(150):
                try:
                    requests.get(f"{base}/login/", timeout=10)
                    break
                except requests.RequestException:
                    time.sleep(0.2)
            label = (
                f"{kind}, {fill:,} comparisons ({fill - open_:,} complete, {open_:,} open, "
                f"each wanting {args.overlap} judgments"
                + (
                    ", beside one imported; the campaign's default gold rate and adjudication"
                    if args.as_imported
                    else ""
                )
                + ")"
            )
            try:
                floor = summarise(
                    run_phase(
                        base,
                        people[: args.annotators],
                        "floor",
                        args.seconds,
                        0,
                        set(),
                        args.client_processes,
                    ),
                    args.seconds,
                )
                print(f"{label}: floor {floor['floor_rate']:.1f} iterations/s (2 minimal API requests each)")
                phases = (
                    ("one", "saturation, one call", "one call", args.annotators, 0.0),
                    ("two", "saturation, two calls", "two calls", args.annotators, 0.0),
                    ("human", "human pace", "one call", args.pace_annotators, args.think),
                )
                for key, label_mode, mode, count, think in phases:
                    if key not in args.phases.split(","):
                        continue
                    group = people[:count]
                    htmx = {name for name, _ in group[: round(count * args.htmx_share)]}
                    summary = summarise(
                        run_phase(base, group, mode, args.seconds, think, htmx, args.client_processes),
                        args.seconds,
                        frozenset(htmx),
                    )
                    path = Path(f"/tmp/prefloop-load-acked-{port}.json")
                    path.write_text(json.dumps(summary["acked"]))
                    reset_to = ("1", str(args.overlap + 1)) if args.as_imported else ("0", str(args.overlap))
                    check = json.loads(django_script(CHECK, env, str(path), "reset", *reset_to))
                    ratio = summary["rate"] / floor["floor_rate"] if floor["floor_rate"] else 0.0
                    print(
                        f"{label}: {label_mode}: {summary['rate']:.1f} judgments/s"
                        + (f" ({ratio:.0%} of the floor's iterations/s)" if not think else "")
                        + f"; submit and get the next p50 {summary['p50']:.0f} ms, p95 {summary['p95']:.0f} ms, p99 {summary['p99']:.0f} ms"
                        + (
                            f" (API p50 / p95 {summary['api p50']:.0f} / {summary['api p95']:.0f} ms, "
                            f"page {summary['page p50']:.0f} / {summary['page p95']:.0f} ms)"
                            if htmx
                            else ""
                        )
                    )
                    ok = (
                        check["lost"] == 0
                        and check["over_overlap"] == 0
                        and check["served_twice_db"] == 0
                        and summary["served_twice_client"] == 0
                    )
                    failed |= not ok
                    print(
                        f"    invariants {'hold' if ok else 'BROKEN'}: {check['acknowledged']} acknowledged submits, "
                        f"{check['stored']} stored ({check['lost']} acknowledged but missing, {check['unacknowledged']} stored "
                        f"without an acknowledgement), {check['over_overlap']} comparisons beyond their overlap, "
                        f"{summary['served_twice_client'] + check['served_twice_db']} served twice; "
                        f"{len(summary['errors'])} client errors{': ' + '; '.join(sorted(set(summary['errors']))[:3]) if summary['errors'] else ''}"
                    )
            finally:
                server.send_signal(signal.SIGTERM)
                server.wait(timeout=30)
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
