"""Loss terms shared by the policy-gradient algorithms (A2C, async A2C, PPO, APPO), named as TorchRL names its
``loss_*`` terms. Each returns the mean over the batch; the algorithm weighs and sums them."""

from __future__ import annotations

import torch


def normalized(advantages: torch.Tensor) -> torch.Tensor:
    """Advantages shifted and scaled to mean 0 and standard deviation 1 (over this batch)."""
    return (advantages - advantages.mean()) / (advantages.std() + 1e-8)


def loss_policy_gradient(advantages: torch.Tensor, log_prob: torch.Tensor) -> torch.Tensor:
    """The vanilla policy-gradient loss ``−mean(A · log π(a|s))`` (advantages carry no gradient)."""
    return -(advantages * log_prob).mean()


def loss_clipped_surrogate(advantages: torch.Tensor, ratio: torch.Tensor, clip: float) -> torch.Tensor:
    """PPO's clipped surrogate ``mean(max(−A·r, −A·clip(r, 1 − ε, 1 + ε)))`` for the ratio r = π/π_old."""
    return torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - clip, 1 + clip)).mean()


def loss_value(value: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The squared error of the value ``mean((V − target)²)``."""
    return ((value - target) ** 2).mean()


def loss_value_clipped(
    value: torch.Tensor, old_value: torch.Tensor, target: torch.Tensor, clip: float
) -> torch.Tensor:
    """PPO's clipped value loss: the larger of the squared errors of V and of V kept within ``clip`` of the
    rollout's value, ``mean(max((V − target)², (V_old + clip(V − V_old, −ε, ε) − target)²))``."""
    clipped = old_value + (value - old_value).clamp(-clip, clip)
    return torch.max((value - target) ** 2, (clipped - target) ** 2).mean()


def clip_fraction(ratio: torch.Tensor, clip: float) -> torch.Tensor:
    """The share of samples whose ratio lies outside ``[1 − clip, 1 + clip]`` (a diagnostic)."""
    return ((ratio - 1).abs() > clip).float().mean()
