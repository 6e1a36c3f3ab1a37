"""Peak memory of one forward + backward through the LM head: full logits against the chunked head.

    python benchmarks/logps_memory.py                 # 128,256-token vocabulary (Llama 3's), hidden 576

Each case runs in its own process: hidden states of N response positions (float32) go through the
head to per-token log-probs, then backward. "full" is the plain way (logits of every position,
log-softmax in float32: what the trainer did before); "chunked" is ``training.dpo.logps.label_logps``.
Reported: the process's peak RSS above what it held once the inputs existed (CPU), or the peak
allocated above the inputs (GPU).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(mode: str, positions: int, vocab: int, hidden_size: int) -> dict:
    import torch
    import torch.nn.functional as F

    from training.dpo.logps import label_logps

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(0)
    hidden = torch.randn(positions, hidden_size, device=device, requires_grad=True)
    weight = (0.02 * torch.randn(vocab, hidden_size, device=device)).requires_grad_()
    labels = torch.randint(0, vocab, (positions,), device=device)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        base = _rss_mb()
    if mode == "full":
        out = -F.cross_entropy((hidden @ weight.T).float(), labels, reduction="none")
    else:
        out = label_logps(hidden, weight, labels)
    out.sum().backward()
    if device == "cuda":
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        peak = _rss_mb() - base
    return {"peak_mb": peak, "logps_sum": float(out.sum())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=128_256)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--positions", type=int, nargs="+", default=[512, 1024, 2048, 4096])
    p.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        mode, positions, vocab, hidden = args.child
        print("RESULT " + json.dumps(child(mode, int(positions), int(vocab), int(hidden))))
        return
    print(f"command: python benchmarks/logps_memory.py {' '.join(sys.argv[1:])}".rstrip())
    print(
        f"vocabulary {args.vocab}, hidden {args.hidden}; peak memory of forward + backward above the inputs"
    )
    print(f"{'positions':>10}{'full MB':>10}{'chunked MB':>12}{'logits MB':>11}{'|sum diff|':>12}")
    for n in args.positions:
        got = {}
        for mode in ("full", "chunked"):
            command = [sys.executable, __file__, "--child", mode, str(n), str(args.vocab), str(args.hidden)]
            done = subprocess.run(command, capture_output=True, text=True, check=True)
            line = next(ln for ln in done.stdout.splitlines() if ln.startswith("RESULT "))
            got[mode] = json.loads(line[len("RESULT ") :])
        logits_mb = n * args.vocab * 4 / 2**20
        diff = abs(got["full"]["logps_sum"] - got["chunked"]["logps_sum"])
        print(
            f"{n:>10}{got['full']['peak_mb']:>10.0f}{got['chunked']['peak_mb']:>12.0f}{logits_mb:>11.0f}{diff:>12.2e}"
        )


if __name__ == "__main__":
    main()
