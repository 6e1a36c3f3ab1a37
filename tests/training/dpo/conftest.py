"""Tiny models and tokenizers built in the test session: no downloads, seconds on a CPU."""

import json

import pytest


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


# Pairs a model can learn to rank in a few steps: the chosen answers share a style.
PREFERENCES = [
    ("what is the capital of france?", "paris.", "the quick brown fox jumps over the lazy dog"),
    ("name a colour", "blue.", "no no no no no"),
    ("answer briefly please", "yes.", "maybe so maybe so maybe so"),
    ("hello", "hi.", "the lazy dog the lazy dog"),
    ("thanks", "yes.", "quick brown fox quick brown fox"),
    ("name a colour please", "red.", "maybe no maybe no"),
    ("what is the capital?", "paris.", "dog fox dog fox dog"),
    ("hi", "hello.", "over the lazy over the lazy"),
]


@pytest.fixture
def standard_pairs(tmp_path):
    rows = [{"prompt": p, "chosen": c, "rejected": r} for p, c, r in PREFERENCES]
    return write_jsonl(tmp_path / "standard.jsonl", rows)


@pytest.fixture
def conversational_pairs(tmp_path):
    rows = [
        {
            "prompt": [{"role": "user", "content": p}],
            "chosen": [{"role": "assistant", "content": c}],
            "rejected": [{"role": "assistant", "content": r}],
        }
        for p, c, r in PREFERENCES
    ]
    return write_jsonl(tmp_path / "conversational.jsonl", rows)
