"""Random-weight models of real shapes for the GPU benchmarks (benchmarks/gpu.sh), written once.

    python benchmarks/gpu_models.py DIR    # DIR/llama-1b (Llama-3.2-1B's shape), DIR/llama-8b (Llama-3.1-8B's)

Both have a 128,256-token vocabulary. The tokenizer is SmolLM2's where it can be found
(``$PREFLOOP_TOKENIZER`` or var/models/smollm2-135m-instruct), else a small byte-level BPE built here:
the benchmarks only tokenise their synthetic text, and a random model's answers are noise either way.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHAPES = {
    "llama-1b": {"hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "tie_word_embeddings": True, "rope_theta": 500000.0},
    "llama-8b": {"hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
                 "num_key_value_heads": 8, "tie_word_embeddings": False, "rope_theta": 500000.0},
}  # fmt: skip


def tokenizer_load():
    from transformers import AutoTokenizer

    for candidate in (os.environ.get("PREFLOOP_TOKENIZER"), ROOT / "var/models/smollm2-135m-instruct"):
        if candidate and (Path(candidate) / "tokenizer.json").is_file():
            return AutoTokenizer.from_pretrained(candidate)
    from tests.tiny import CHATML, tiny_tokenizer

    return tiny_tokenizer(CHATML)


def models_write(where: Path) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = tokenizer_load()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, shape in SHAPES.items():
        target = where / name
        if (target / "config.json").exists():
            continue
        config = LlamaConfig(
            vocab_size=128_256,
            max_position_embeddings=8192,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            bos_token_id=None,
            **shape,
        )
        with torch.device(device):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(target)
        tokenizer.save_pretrained(target)
        print(f"{name}: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B parameters at {target}")
        del model


if __name__ == "__main__":
    models_write(Path(sys.argv[1]))
