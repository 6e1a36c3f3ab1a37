"""How long Pygments takes to highlight adversarial code in each language the pages highlight
(``annotate.rendering.LEXERS``), and in the lexers a security review found exponential, for contrast.

Each lexer gets delimiter soups (random characters from the ones lexers branch on), runs of one
delimiter pair (``/`` then ``\\``, quotes, comment openers), at 1,000 and 4,000 characters (the most
one text highlights) and 20,000. A linear lexer takes about 4x longer on the 4x input, a quadratic one
16x; the script prints the worst time and that ratio per lexer and flags any over ``--limit`` seconds
at 4,000 characters.

    .venv/bin/python benchmarks/lexers.py [--limit 0.2] [--seed 0] [--lexers scala tads3]
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_by_name

from annotate.rendering import LEXERS

DELIMITERS = "/\\'\"`*#<>{}()[]$@!%-=+;:,.?|&^~ \n\tabx0"
RUNS = ["/", "\\", "'", '"', "/*", "*/", "<!--", "#", "{", "(", "[", "$(", "${", "<<", "%", "\\'", '\\"']
EXPONENTIAL = ["tads3", "systemd", "autoit"]  # the review's: shown for contrast, at small sizes only


def shapes(size: int, rng: random.Random) -> dict[str, str]:
    found = {f"soup{i}": "".join(rng.choice(DELIMITERS) for _ in range(size)) for i in range(3)}
    for a in RUNS:
        for b in ("/", "\\", "'", '"', "\n"):
            found[f"{a!r}x{b!r}"] = (a * (size // (2 * len(a))) + b * (size // 2))[:size]
            found[f"({a!r}{b!r})"] = ((a + b) * size)[:size]
    return found


def worst(lexer_name: str, size: int, rng: random.Random) -> tuple[float, str]:
    lexer, formatter = get_lexer_by_name(lexer_name), HtmlFormatter(nowrap=True)
    slowest, which = 0.0, ""
    for name, code in shapes(size, rng).items():
        start = time.perf_counter()
        highlight(code, lexer, formatter)
        took = time.perf_counter() - start
        if took > slowest:
            slowest, which = took, name
    return slowest, which


def _one(name: str, seed: int) -> str:
    """One lexer's row (run in a child process, so a lexer that never ends is cut off)."""
    small, _ = worst(name, 1000, random.Random(seed))
    large, _ = worst(name, 4000, random.Random(seed))
    huge, shape = worst(name, 20_000, random.Random(seed))
    return f"{small * 1e3:7.1f}ms {large * 1e3:8.1f}ms {large / max(small, 1e-9):5.1f}x {huge * 1e3:9.1f}ms  {shape}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=0.2, help="seconds a text's code may take")
    parser.add_argument("--timeout", type=float, default=120, help="seconds one lexer's row may take")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    parser.add_argument("--lexers", nargs="*", help="these instead of the highlighted ones")
    args = parser.parse_args()
    if args.one:
        print(_one(args.one, args.seed))
        return 0
    print(f"$ {' '.join(sys.argv)}")
    print("lexer        worst@1k   worst@4k  ratio   worst@20k  its shape")
    failed = []
    for name in args.lexers or sorted(set(LEXERS.values())):
        command = [sys.executable, __file__, "--one", name, "--seed", str(args.seed)]
        try:
            row = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout, check=True)
        except subprocess.TimeoutExpired:
            print(f"{name:12} did not end within {args.timeout:.0f} s  SLOW")
            failed.append(name)
            continue
        large = float(row.stdout.split()[1].removesuffix("ms")) / 1e3
        flag = "  SLOW" if large > args.limit else ""
        print(f"{name:12} {row.stdout.strip()}{flag}")
        if flag:
            failed.append(name)
    print("\nnot highlighted (the review's exponential lexers), runs of '/' then '\\':")
    for name in EXPONENTIAL:
        lexer, formatter = get_lexer_by_name(name), HtmlFormatter(nowrap=True)
        for n in (10, 14, 18):
            code = "/" * n + "\\" * n
            start = time.perf_counter()
            highlight(code, lexer, formatter)
            took = (time.perf_counter() - start) * 1e3
            print(f"  {name:8} {2 * n} characters: {took:8.1f} ms")
    print(f"\n{len(failed)} over {args.limit}s at 4,000 characters: {failed or 'none'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
