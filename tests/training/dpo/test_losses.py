"""Each loss against a hand computation on fixed numbers (math module only, no torch on that side)."""

import math

import pytest
import torch

from training.dpo import losses


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def softplus(x):  # -log σ(x) = log(1 + e^-x)
    return math.log1p(math.exp(-x))


# One pair: the policy moved +0.5 on chosen and -0.5 on rejected relative to the reference.
PAIR = {"policy_chosen": t(-1.0), "policy_rejected": t(-2.0), "ref_chosen": t(-1.5), "ref_rejected": t(-1.5)}


def test_dpo_loss_is_log2_when_policy_equals_reference():
    loss, chosen, rejected = losses.dpo_sigmoid(
        policy_chosen=t(-3.0), policy_rejected=t(-5.0), ref_chosen=t(-3.0), ref_rejected=t(-5.0), beta=0.1
    )
    assert loss.item() == pytest.approx(math.log(2))
    assert (chosen.item(), rejected.item()) == (0.0, 0.0)


def test_dpo_sigmoid_by_hand():
    loss, chosen, rejected = losses.dpo_sigmoid(**PAIR, beta=0.1)
    # h = 0.1 * (0.5 - (-0.5)) = 0.1
    assert loss.item() == pytest.approx(softplus(0.1))  # 0.644397
    assert loss.item() == pytest.approx(0.6443967, abs=1e-6)
    assert (chosen.item(), rejected.item()) == pytest.approx((0.05, -0.05))
    assert not chosen.requires_grad


def test_robust_by_hand_and_equal_to_dpo_without_flips():
    loss, _, _ = losses.dpo_robust(**PAIR, beta=0.1, label_smoothing=0.1)
    expected = (0.9 * softplus(0.1) - 0.1 * softplus(-0.1)) / (1 - 0.2)
    assert loss.item() == pytest.approx(expected)
    plain, _, _ = losses.dpo_robust(**PAIR, beta=0.1, label_smoothing=0.0)
    assert plain.item() == pytest.approx(softplus(0.1))


def test_hinge_by_hand():
    assert losses.dpo_hinge(**PAIR, beta=0.1)[0].item() == pytest.approx(0.9)
    assert losses.dpo_hinge(**PAIR, beta=2.0)[0].item() == 0.0  # margin 2 > 1: no loss


def test_ipo_by_hand_uses_per_token_log_ratios():
    loss, _, _ = losses.dpo_ipo(**PAIR, chosen_tokens=t(2.0), rejected_tokens=t(4.0), beta=0.1)
    # h = 0.5/2 - (-0.5)/4 = 0.375; target 1/(2*0.1) = 5
    assert loss.item() == pytest.approx((0.375 - 5) ** 2)  # 21.390625


def test_dpo_positive_penalises_chosen_falling_below_reference():
    loss, _, _ = losses.dpo_positive(
        policy_chosen=t(-2.0),
        policy_rejected=t(-3.0),
        ref_chosen=t(-1.5),
        ref_rejected=t(-1.5),
        beta=0.1,
        dpop_lambda=50.0,
    )
    # ratios: chosen -0.5, rejected -1.5; penalty max(0, -1.5 - -2) = 0.5
    # inner = 0.1 * (-0.5 + 1.5 - 50 * 0.5) = -2.4
    assert loss.item() == pytest.approx(softplus(-2.4))  # 2.490741
    no_penalty, _, _ = losses.dpo_positive(**PAIR, beta=0.1, dpop_lambda=50.0)
    assert no_penalty.item() == pytest.approx(softplus(0.1))  # chosen above reference: plain DPO


def test_simpo_by_hand_is_length_normalised_and_reference_free():
    loss, chosen, rejected = losses.simpo(
        policy_chosen=t(-4.0),
        policy_rejected=t(-12.0),
        chosen_tokens=t(2.0),
        rejected_tokens=t(4.0),
        beta=2.0,
        gamma=0.5,
    )
    # 2 * (-4/2) = -4, 2 * (-12/4) = -6; margin 2 - gamma 0.5 = 1.5
    assert loss.item() == pytest.approx(softplus(1.5))  # 0.201413
    assert (chosen.item(), rejected.item()) == (-4.0, -6.0)


def test_orpo_by_hand():
    loss, chosen, _ = losses.orpo(
        policy_chosen=t(2 * math.log(0.5)),
        policy_rejected=t(3 * math.log(0.25)),
        chosen_tokens=t(2.0),
        rejected_tokens=t(3.0),
        beta=0.1,
    )
    # P(chosen) = 0.5 → odds 1; P(rejected) = 0.25 → odds 1/3; log odds ratio = log 3
    # NLL = -log 0.5; loss = NLL - 0.1 * log σ(log 3) = log 2 - 0.1 * log(3/4)
    assert loss.item() == pytest.approx(math.log(2) - 0.1 * math.log(0.75))  # 0.721915
    assert chosen.item() == pytest.approx(0.1 * math.log(0.5))


def test_losses_are_per_pair_and_batched():
    loss, chosen, rejected = losses.dpo_sigmoid(
        policy_chosen=t(-1.0, -3.0),
        policy_rejected=t(-2.0, -3.0),
        ref_chosen=t(-1.5, -3.0),
        ref_rejected=t(-1.5, -3.0),
        beta=0.1,
    )
    assert loss.shape == chosen.shape == rejected.shape == (2,)
    assert loss.tolist() == pytest.approx([softplus(0.1), math.log(2)])


def test_robust_loss_takes_each_pairs_own_label_smoothing():
    from training.dpo.losses import dpo_robust

    pairs = {
        "policy_chosen": torch.tensor([-1.0, -2.0]),
        "policy_rejected": torch.tensor([-3.0, -1.5]),
        "ref_chosen": torch.tensor([-1.5, -1.8]),
        "ref_rejected": torch.tensor([-2.5, -1.9]),
        "beta": 0.5,
    }
    together, _, _ = dpo_robust(**pairs, label_smoothing=torch.tensor([0.0, 0.3]))
    alone = [dpo_robust(**pairs, label_smoothing=e)[0][i] for i, e in enumerate((0.0, 0.3))]
    torch.testing.assert_close(together, torch.stack(alone))
    # h = 0.5 * ((−1 + 1.5) − (−3 + 2.5)) = 0.5: with ε = 0 it is plain DPO, −log σ(0.5)
    assert together[0].item() == pytest.approx(-torch.nn.functional.logsigmoid(torch.tensor(0.5)).item())
