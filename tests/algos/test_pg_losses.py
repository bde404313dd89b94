"""The policy-gradient loss terms against hand computations."""

from __future__ import annotations

import pytest
import torch

from lightning_accelrl.algos.pg_losses import (
    clip_fraction,
    loss_clipped_surrogate,
    loss_policy_gradient,
    loss_value,
    loss_value_clipped,
    normalized,
)


def test_clipped_surrogate_takes_the_pessimistic_term_per_sample() -> None:
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    ratio = torch.tensor([1.5, 0.5, 1.5, 0.5])
    # A > 0: min(r, clip(r)) · A → 1.2, 0.5; A < 0: max(r, clip(r)) · A → −1.5, −0.8 (losses are the negatives)
    expected = -(1.2 + 0.5 - 1.5 - 0.8) / 4
    assert loss_clipped_surrogate(adv, ratio, 0.2).item() == pytest.approx(expected)


def test_clipped_surrogate_gradient_vanishes_where_the_clip_binds() -> None:
    ratio = torch.tensor([1.5, 1.1], requires_grad=True)
    loss_clipped_surrogate(torch.tensor([1.0, 1.0]), ratio, 0.2).backward()
    assert ratio.grad.tolist() == pytest.approx([0.0, -0.5])


def test_policy_gradient_and_value_losses() -> None:
    adv, logp = torch.tensor([2.0, -1.0]), torch.tensor([-0.5, -2.0])
    assert loss_policy_gradient(adv, logp).item() == pytest.approx(-(2.0 * -0.5 + -1.0 * -2.0) / 2)
    assert loss_value(torch.tensor([1.0, 3.0]), torch.tensor([2.0, 0.0])).item() == pytest.approx((1 + 9) / 2)


def test_clipped_value_loss_keeps_the_larger_error() -> None:
    value, old, target = torch.tensor([2.0, 0.1]), torch.tensor([0.0, 0.0]), torch.tensor([2.0, 1.0])
    # sample 0: V moved 2 from V_old, clipped to 0.5: errors 0 and 2.25 → 2.25; sample 1: inside the clip → 0.81
    assert loss_value_clipped(value, old, target, 0.5).item() == pytest.approx((2.25 + 0.81) / 2)


def test_clip_fraction_and_normalized_advantages() -> None:
    assert clip_fraction(torch.tensor([1.0, 1.3, 0.7, 1.1]), 0.2).item() == pytest.approx(0.5)
    adv = normalized(torch.tensor([1.0, 2.0, 3.0, 6.0]))
    assert adv.mean().item() == pytest.approx(0.0, abs=1e-6)
    assert adv.std().item() == pytest.approx(1.0, abs=1e-6)
