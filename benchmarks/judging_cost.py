"""What one request costs the web process, alone (no concurrency): the floor's minimal authenticated
request (GET /api/judgments/, none yet) beside "submit the judgment and get the next" in one API call
(POST /api/judgments/ with next: true) and on the judging page (htmx POST /annotate/judge/), through
Django's whole handler and middleware, on the production settings (DEBUG off) and a fresh database of
each kind filled as ``load.py`` fills it. Prints the milliseconds of each (wall clock, and the
process's own CPU time: the rest is the database and the wait for it; the fastest of batches of 20)
and their ratio, which bounds what ``load.py`` can reach (its floor makes two minimal requests per
iteration); ``--profile api|page`` prints where the time of that call goes (cProfile: the top
functions by their own time, then the project's and DRF's by cumulative time).

    python benchmarks/judging_cost.py
    python benchmarks/judging_cost.py --databases postgresql --profile api
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.databases import ROOT, bench_env, fresh_database, static_collect
from benchmarks.load import PASSWORD, SETUP, django_script

MEASURE = r"""
import cProfile, io, json, pstats, sys, time
import django
django.setup()
from django.contrib.auth import get_user_model
from django.test import Client
from django.test.utils import setup_test_environment

setup_test_environment()  # (the test client; the settings stay production's)
token, floor_token, username, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
profile = sys.argv[5]  # "", or which call to profile: api or page
api = Client(HTTP_AUTHORIZATION=f"Token {token}")
idle = Client(HTTP_AUTHORIZATION=f"Token {floor_token}")  # the floor's annotator: no judgments, as in load.py
page = Client(enforce_csrf_checks=False)
page.force_login(get_user_model().objects.get(username=username))


def floor():
    assert idle.get("/api/judgments/").status_code == 200


state = {}


def api_judge():
    following = state.get("api") or api.post("/api/comparisons/next/").json()
    reply = api.post("/api/judgments/", {"comparison": following["comparison"], "verdict": "left", "next": True}, content_type="application/json")
    assert reply.status_code == 201, reply.content[:300]
    state["api"] = reply.json()["next"]


def page_judge():
    if "page" not in state:
        state["page"] = int(page.get("/annotate/").content.split(b'name="comparison" value="')[1].split(b'"')[0])
    reply = page.post("/annotate/judge/", {"comparison": state["page"], "answer": "left"}, HTTP_HX_REQUEST="true")
    assert reply.status_code == 200 and b"Recorded on the previous comparison" in reply.content, reply.content[:300]
    state["page"] = int(reply.content.split(b'name="comparison" value="')[1].split(b'"')[0])


result = {}
calls = (("floor", floor), ("api", api_judge), ("page", page_judge))
for name, call in calls:
    for _ in range(20):  # warm: connections, caches, compiled templates, prepared statements
        call()
# Batches of 20 of each, interleaved, keeping each kind's fastest batch: on a shared machine the other
# tenants only ever add time, so the minimum is the repeatable figure (as timeit reports it).
for _ in range(count // 20):
    for name, call in calls:
        started, cpu = time.perf_counter(), time.process_time()
        for _ in range(20):
            call()
        wall, cpu = (time.perf_counter() - started) / 20 * 1000, (time.process_time() - cpu) / 20 * 1000
        result[name] = min(result.get(name, wall), wall)
        result[name + " cpu"] = min(result.get(name + " cpu", cpu), cpu)
if profile:
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(count):
        (api_judge if profile == "api" else page_judge)()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(25)  # where the time is spent
    stats.sort_stats("cumulative").print_stats(r"annotate/|config/|rest_framework/(views|generics|serializers|renderers|authentication)|db/models/sql/compiler.py:.*(execute_sql|as_sql)", 40)
    print(out.getvalue(), file=sys.stderr)
print(json.dumps(result))
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--databases", default="postgresql,sqlite")
    parser.add_argument("--requests", type=int, default=300, help="of each kind, after 20 to warm up")
    parser.add_argument("--profile", choices=["api", "page"], help="and profile this call")
    args = parser.parse_args()
    static_collect()
    print("$ python benchmarks/judging_cost.py " + " ".join(sys.argv[1:]))
    for kind in args.databases.split(","):
        url = fresh_database(kind)
        env = bench_env(url)
        # 3,000 open comparisons wanting one judgment each: enough for every call measured
        people = json.loads(django_script(SETUP, env, "3000", "3000", "3", PASSWORD, "1", "plain"))
        (_, token), (page_user, _), (_, floor_token) = people
        run = subprocess.run(
            [
                sys.executable,
                "-c",
                MEASURE,
                token,
                floor_token,
                page_user,
                str(args.requests),
                args.profile or "",
            ],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
        )
        if run.returncode != 0:
            raise SystemExit(run.stderr[-3000:])
        if args.profile:
            print(run.stderr)
        ms = json.loads(run.stdout.strip().splitlines()[-1])
        print(
            f"{kind}: minimal request {ms['floor']:.2f} ms; judgment and next over the API {ms['api']:.2f} ms "
            f"({ms['api'] / ms['floor']:.1f}x), on the judging page {ms['page']:.2f} ms ({ms['page'] / ms['floor']:.1f}x); "
            f"of which the web process's own CPU: {ms['floor cpu']:.2f}, {ms['api cpu']:.2f} and {ms['page cpu']:.2f} ms"
        )


if __name__ == "__main__":
    main()
