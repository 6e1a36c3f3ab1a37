"""Checkpoints in Hugging Face format, written atomically.

Everything goes into a temporary directory beside the target, which is renamed (``os.replace``) only
once complete: a crash leaves either the previous checkpoint or the new one, never half of one.
A checkpoint directory holds the model (safetensors; for LoRA the adapter), the tokenizer, and
``trainer_state.pt`` (step, optimizer and scheduler) for ``--resume``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

STATE_FILE = "trainer_state.pt"
_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def directory_write_atomic(target: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a fresh temporary directory and rename it to ``target`` when done."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.tmp-"))
    tmp.chmod(0o755)
    try:
        write(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def checkpoint_save(
    output_dir: Path,
    *,
    step: int,
    model: Any,
    tokenizer: Any,
    state: dict[str, Any],
    state_dict: dict[str, Any] | None = None,
) -> Path:
    """``state_dict``: the model's full weights where ``model`` holds only a shard of them (FSDP)."""

    def write(tmp: Path) -> None:
        model.save_pretrained(tmp, safe_serialization=True, state_dict=state_dict)
        tokenizer.save_pretrained(tmp)
        torch.save(state, tmp / STATE_FILE)

    return directory_write_atomic(Path(output_dir) / f"checkpoint-{step}", write)


def checkpoint_latest(output_dir: Path) -> Path | None:
    """The complete checkpoint with the highest step (temporary directories never match)."""
    found = [
        (int(match.group(1)), path)
        for path in Path(output_dir).glob("checkpoint-*")
        if (match := _CHECKPOINT.match(path.name)) and (path / STATE_FILE).is_file()
    ]
    return max(found)[1] if found else None
