"""Advantage and return estimators shared by the policy-gradient algorithms."""

from __future__ import annotations

import torch


def gae(
    reward: torch.Tensor,
    value: torch.Tensor,
    next_value: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    lmbda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over time-major tensors ``[T, B, 1]``; returns (advantage, value target).

    ``next_value`` is V(s_{t+1}) for every step (the final observation's value where an episode was truncated),
    so bootstrapping stops only at termination, and ``done`` cuts the trace at every episode end.
    Written here rather than taken from TorchRL's ``generalized_advantage_estimate``: that one is exact too,
    but importing torchrl costs ~3 s and switches the global multiprocessing start method to spawn.
    """
    not_terminated = (~terminated).to(reward.dtype)
    not_done = (~done).to(reward.dtype)
    delta = reward + gamma * next_value * not_terminated - value
    advantage = torch.empty_like(delta)
    last = torch.zeros_like(delta[0])
    discount = gamma * lmbda * not_done
    for t in range(delta.shape[0] - 1, -1, -1):
        last = delta[t] + discount[t] * last
        advantage[t] = last
    return advantage, advantage + value
