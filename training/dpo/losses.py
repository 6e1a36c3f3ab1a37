"""Preference losses: tensors in, tensors out, each from its paper.

Every input is shaped [batch] (one value per pair). ``*_logps`` are summed log-probabilities of the
response tokens; ``*_tokens`` their counts. Each loss returns ``(losses, chosen_rewards,
rejected_rewards)``, all [batch]; the rewards are detached and are what TRL logs as
``rewards/chosen`` and ``rewards/rejected``. Keyword-only, so chosen and rejected cannot swap.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

Result = tuple[Tensor, Tensor, Tensor]


def _implicit_rewards(
    chosen_logratios: Tensor, rejected_logratios: Tensor, beta: float
) -> tuple[Tensor, Tensor]:
    return (beta * chosen_logratios).detach(), (beta * rejected_logratios).detach()


def dpo_sigmoid(
    *, policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> Result:
    """DPO (Rafailov et al. 2023, eq. 7): -log σ(β[(πc - rc) - (πr - rr)])."""
    chosen, rejected = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    return (-F.logsigmoid(beta * (chosen - rejected)), *_implicit_rewards(chosen, rejected, beta))


def dpo_robust(
    *,
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    label_smoothing: float | Tensor,
) -> Result:
    """Robust DPO (Chowdhury et al. 2024, eq. 8): unbiased under a share ε of flipped labels.

    ((1-ε)·(-log σ(βh)) - ε·(-log σ(-βh))) / (1 - 2ε), with h the DPO log-ratio margin. ε = 0 is DPO.
    ``label_smoothing`` is one ε for every pair, or [batch]: each pair's own (1 - its confidence).
    """
    chosen, rejected = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    h = beta * (chosen - rejected)
    eps = label_smoothing
    losses = (-(1 - eps) * F.logsigmoid(h) + eps * F.logsigmoid(-h)) / (1 - 2 * eps)
    return (losses, *_implicit_rewards(chosen, rejected, beta))


def dpo_hinge(
    *, policy_chosen: Tensor, policy_rejected: Tensor, ref_chosen: Tensor, ref_rejected: Tensor, beta: float
) -> Result:
    """Hinge (SLiC, Zhao et al. 2023): max(0, 1 - β[(πc - rc) - (πr - rr)])."""
    chosen, rejected = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    return (torch.relu(1 - beta * (chosen - rejected)), *_implicit_rewards(chosen, rejected, beta))


def dpo_ipo(
    *,
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    chosen_tokens: Tensor,
    rejected_tokens: Tensor,
    beta: float,
) -> Result:
    """IPO (Azar et al. 2023, eq. 17): (h - 1/(2τ))², τ = β.

    h uses per-token averaged log-ratios, as TRL does (confirmed with the IPO authors), so that β
    means the same whatever the response lengths.
    """
    chosen, rejected = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    h = chosen / chosen_tokens.clamp(min=1) - rejected / rejected_tokens.clamp(min=1)
    return ((h - 1 / (2 * beta)) ** 2, *_implicit_rewards(chosen, rejected, beta))


def dpo_positive(
    *,
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    ref_chosen: Tensor,
    ref_rejected: Tensor,
    beta: float,
    dpop_lambda: float,
) -> Result:
    """DPO-Positive (Pal et al. 2024, Smaug, eq. 3).

    -log σ(β[(πc - rc) - (πr - rr) - λ·max(0, rc - πc)]): plain DPO can lower the chosen response's
    likelihood as long as the rejected one falls faster; the penalty stops the chosen log-ratio
    from going below zero.
    """
    chosen, rejected = policy_chosen - ref_chosen, policy_rejected - ref_rejected
    penalty = torch.clamp(ref_chosen - policy_chosen, min=0)
    losses = -F.logsigmoid(beta * (chosen - rejected - dpop_lambda * penalty))
    return (losses, *_implicit_rewards(chosen, rejected, beta))


def simpo(
    *,
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    chosen_tokens: Tensor,
    rejected_tokens: Tensor,
    beta: float,
    gamma: float,
) -> Result:
    """SimPO (Meng et al. 2024, eq. 6), reference-free: -log σ(β/|yc|·πc - β/|yr|·πr - γ).

    Rewards are the length-normalised log-probs times β.
    """
    chosen = beta * policy_chosen / chosen_tokens.clamp(min=1)
    rejected = beta * policy_rejected / rejected_tokens.clamp(min=1)
    return -F.logsigmoid(chosen - rejected - gamma), chosen.detach(), rejected.detach()


def orpo(
    *,
    policy_chosen: Tensor,
    policy_rejected: Tensor,
    chosen_tokens: Tensor,
    rejected_tokens: Tensor,
    beta: float,
) -> Result:
    """ORPO (Hong et al. 2024, eq. 6-7), reference-free: NLL(chosen) - λ·log σ(log odds_c - log odds_r).

    odds(y) = P(y)/(1 - P(y)) with P the per-token-averaged likelihood; λ = β. The NLL is the
    chosen response's mean token negative log-likelihood. Rewards: β times the averaged log-probs.
    """
    chosen_avg = policy_chosen / chosen_tokens.clamp(min=1)
    rejected_avg = policy_rejected / rejected_tokens.clamp(min=1)
    # log odds = log p - log(1 - p), with log(1 - p) = log1p(-exp(log p)) computed stably
    log_odds = (chosen_avg - rejected_avg) - (
        torch.log1p(-torch.exp(chosen_avg).clamp(max=1 - 1e-7))
        - torch.log1p(-torch.exp(rejected_avg).clamp(max=1 - 1e-7))
    )
    losses = -chosen_avg - beta * F.logsigmoid(log_odds)
    return losses, (beta * chosen_avg).detach(), (beta * rejected_avg).detach()


def kto(
    *,
    policy_logps: Tensor,
    ref_logps: Tensor,
    desirable: Tensor,
    kl: Tensor,
    beta: float,
    desirable_weight: float,
    undesirable_weight: float,
) -> tuple[Tensor, Tensor]:
    """KTO (Ethayarajh et al. 2024, eq. 7) on unpaired answers: losses and rewards, [batch] each.

    r = πθ(y|x) - πref(y|x) (summed log-probs); z₀ = ``kl``, the reference point: the policy's KL from
    the reference estimated on mismatched answers, clamped at 0 and detached (a constant, as in the
    paper and TRL). Desirable: λ_D·(1 - σ(β(r - z₀))); undesirable: λ_U·(1 - σ(β(z₀ - r))).
    ``desirable`` is bool [batch]. Rewards: β·r, detached.
    """
    logratios = policy_logps - ref_logps
    z0 = kl.detach().clamp(min=0)
    losses = torch.where(
        desirable,
        desirable_weight * (1 - torch.sigmoid(beta * (logratios - z0))),
        undesirable_weight * (1 - torch.sigmoid(beta * (z0 - logratios))),
    )
    return losses, (beta * logratios).detach()
