"""What one view of the judging page costs with the costliest texts the caps admit: the security
review's shapes (a prompt of 99,999 ``[``, an answer of ``*a`` repeated, a 9,000-row table, a stored
conversation of 100,001 one-letter turns), each in a comparison of its own, served to a fresh
annotator (a first view: nothing rendered before) and once more (a reload). Prints seconds per view
and the page's size, beside plain formatting of the same texts (``markdown-it`` + ``nh3`` unbounded,
what the page did before).

    python benchmarks/render.py
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
os.environ.setdefault("DATABASE_URL", "sqlite:///:memory:")
os.environ.setdefault("DEBUG", "1")  # a local measurement: no SECRET_KEY needed

SHAPES = {
    "(warm-up: an ordinary pair)": ("What is 2 + 2?", "It is **4**.", None),
    "prompt of 99,999 '['": ("[" * 99_999, "A short answer.", None),
    "answer of '*a' x 49,999": ("A short prompt?", "*a" * 49_999, None),
    "answer: a 9,000-row table": ("A table, please.", "| a | b |\n|---|---|\n" + "| x | y |\n" * 9_000, None),
    "conversation of 100,001 turns": (
        "",
        "ok",
        [{"role": "user" if i % 2 == 0 else "assistant", "content": "a"} for i in range(100_001)],
    ),
}


def main() -> None:
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.test import Client
    from django.test.utils import setup_test_environment

    from annotate.models import Campaign, Comparison
    from annotate.rendering import _markdown
    from generation.models import Policy, Prompt, Response

    setup_test_environment()
    call_command("migrate", verbosity=0)
    policy = Policy.objects.create(name="p", location="/nowhere")
    campaign = Campaign.objects.create(name="render")
    print("$ python benchmarks/render.py")
    print(f"{'shape':<34}{'first view s':>13}{'reload s':>10}{'page KB':>9}{'unbounded format s':>20}")
    for n, (label, (prompt_text, answer, messages)) in enumerate(SHAPES.items()):
        prompt = Prompt.objects.create(text=prompt_text, messages=messages)
        a = Response.objects.create(prompt=prompt, policy=policy, text=answer)
        b = Response.objects.create(prompt=prompt, policy=policy, text="Another answer.")
        Comparison.objects.create(prompt=prompt, response_a=a, response_b=b, overlap=1, campaign=campaign)
        client = Client()
        client.force_login(get_user_model().objects.create(username=f"annotator{n}"))
        started = time.perf_counter()
        page = client.get("/annotate/")
        first = time.perf_counter() - started
        started = time.perf_counter()
        client.get("/annotate/")
        reload = time.perf_counter() - started
        texts = [m["content"] for m in messages] if messages else [prompt_text, answer]
        started = time.perf_counter()
        for text in texts:
            _markdown().render(text)
        unbounded = time.perf_counter() - started
        Comparison.objects.all().delete()
        print(f"{label:<34}{first:>13.3f}{reload:>10.3f}{len(page.content) / 1024:>9.0f}{unbounded:>20.3f}")


if __name__ == "__main__":
    main()
