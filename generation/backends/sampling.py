"""Sampling as a logits processor: plain torch, shared by the transformers backend and the trainer's
held-out KL checks (``training/dpo/kl.py``), so both draw answers the same way."""

from __future__ import annotations

import torch

NUCLEUS_TOP_K = 256  # tokens looked at first when sampling; a wider nucleus falls back to a full sort


class NucleusSampler:
    """Exact temperature + top-p sampling, as a logits processor for greedy decoding.

    transformers' sampler sorts the whole vocabulary for top-p and draws from all of it at every step,
    which at 64 sequences and a 49k vocabulary costs about as much as the model's forward pass on a
    CPU. Here the k most likely tokens are taken first (``topk``); where they hold at least ``top_p``
    of the probability, the nucleus lies among them and the token is drawn with the Gumbel-max trick
    on those k alone (argmax of logit/T + Gumbel noise is a draw from the renormalised softmax).
    Rows whose nucleus is wider fall back to the full sort. Every logit but the drawn token's becomes
    -inf, so greedy decoding picks it. The RNG is torch's global one: ``manual_seed`` reproduces a run.
    """

    def __init__(self, *, temperature: float, top_p: float, k: int = NUCLEUS_TOP_K) -> None:
        self.temperature, self.top_p, self.k = temperature, top_p, k

    @staticmethod
    def _gumbel(like: torch.Tensor) -> torch.Tensor:
        return -torch.log(-torch.log(torch.rand_like(like).clamp(1e-10, 1 - 1e-10)))

    def _draw(self, logits: torch.Tensor, log_z: torch.Tensor, ids: torch.Tensor | None) -> torch.Tensor:
        """Draw from ``logits`` (sorted descending, token ids ``ids``) restricted to the nucleus."""
        p = (logits - log_z).exp()
        nucleus = (p.cumsum(-1) - p) < self.top_p  # keep while the mass before a token is below top_p
        choice = torch.where(nucleus, logits + self._gumbel(logits), -torch.inf).argmax(-1, keepdim=True)
        return choice if ids is None else ids.gather(1, choice)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float() / self.temperature
        if self.top_p >= 1.0:
            token = (logits + self._gumbel(logits)).argmax(-1, keepdim=True)
        else:
            log_z = torch.logsumexp(logits, dim=-1, keepdim=True)
            top, ids = logits.topk(min(self.k, logits.shape[-1]), dim=-1)
            token = self._draw(top, log_z, ids)
            wide = ((top - log_z).exp().sum(-1) < self.top_p).nonzero().squeeze(1)
            if wide.numel():
                ordered, order = logits[wide].sort(dim=-1, descending=True)
                token[wide] = self._draw(ordered, log_z[wide], order)
        out = torch.full_like(scores, -torch.inf)
        return out.scatter_(1, token, 0.0)
