"""How much of a conversation a policy can read: its context window (``config.json``) and a
conversation's length in its own tokens (``tokenizer.json``, with the ``tokenizers`` library: no
torch, so the web process can refuse a prompt that is too long before anything is generated).

A policy whose files are not on this machine (a deployment's model named by URL, a GGUF file) has no
known window: the arena's own cap in tokens applies, and its length is estimated from UTF-8 bytes
(a quarter of them, at least one token per word), which over-counts English and does not
under-count CJK text.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

PER_MESSAGE = 8  # a chat template's markers around each message (ChatML: about 5)
WORDS_PER_TOKEN = 0.75  # what the pages say a limit is in words


@lru_cache(maxsize=64)
def _tokenizer(location: str) -> Any:
    path = Path(location) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    try:
        return Tokenizer.from_file(str(path))
    except Exception:  # a file tokenizers cannot read: estimate instead
        return None


@lru_cache(maxsize=64)
def context_window(location: str) -> int | None:
    """The most tokens ``location``'s model reads at once (prompt and answer), when its
    ``config.json`` says; None when unknown."""
    try:
        config = json.loads((Path(location) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    for key in ("max_position_embeddings", "n_positions", "max_seq_len", "seq_length"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return int(config[key])
    return None


def messages_tokens(location: str, messages: list[dict[str, str]]) -> int:
    """A conversation's length in ``location``'s tokens (its tokenizer where it has one, else the
    estimate), with each message's template markers."""
    tokenizer = _tokenizer(location)
    total = 0
    for message in messages:
        text = message["content"]
        if tokenizer is not None:
            total += len(tokenizer.encode(text, add_special_tokens=False).ids)
        else:
            total += max(len(text.encode("utf-8")) // 4, len(text.split()))
        total += PER_MESSAGE
    return total


def words(tokens: int) -> int:
    """About how many words ``tokens`` tokens hold (for messages people read)."""
    return max(1, int(tokens * WORDS_PER_TOKEN))
