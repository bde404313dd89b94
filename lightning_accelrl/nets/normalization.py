"""Running mean and variance of a stream of batches (observation normalization, reward scaling).

The statistics are floating-point buffers of an ``nn.Module``: checkpoints save them with the weights, and the
data layer ships them to sampler processes and Ray actors with the parameters, so every copy of the policy
normalizes its inputs alike. As Stable-Baselines3's ``VecNormalize``: ``(x - mean) / sqrt(var + eps)`` clipped
to ``±clip``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn


def _no_reduce(x: torch.Tensor) -> torch.Tensor:
    return x


class RunningMeanStd(nn.Module):
    """Mean and (population) variance of every sample seen, per element of ``shape``.

    :meth:`update` folds in a batch with the parallel algorithm of Chan et al. (the result equals the mean and
    variance of all batches concatenated). ``mean`` and ``var`` are float32 (what acting reads; shipped to
    samplers exactly); ``count`` is float64 (exact far beyond float32's 2**24). Before any update the mean is 0
    and the variance 1: :meth:`normalize` only clips.
    """

    def __init__(self, shape: Sequence[int] = (), eps: float = 1e-8, clip: float = 10.0) -> None:
        super().__init__()
        self.shape, self.eps, self.clip = tuple(shape), eps, clip
        self.register_buffer("mean", torch.zeros(self.shape))
        self.register_buffer("var", torch.ones(self.shape))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor, all_sum: Callable[[torch.Tensor], torch.Tensor] = _no_reduce) -> None:
        """Fold in the samples ``x`` ``[..., *shape]``. ``all_sum`` sums a tensor over processes (DDP: every
        process passes its own samples and all end with the statistics of all of them)."""
        x = x.reshape(-1, *self.shape).to(torch.float64)
        head = all_sum(torch.cat([x.new_full((1,), x.shape[0]), x.sum(0).reshape(-1)]))
        n = head[0]
        if n == 0:
            return
        batch_mean = (head[1:] / n).reshape(self.shape)
        batch_var = all_sum((x - batch_mean).pow(2).sum(0)) / n  # centred: no cancellation
        self.combine(n, batch_mean, batch_var)

    @torch.no_grad()
    def combine(self, n: torch.Tensor, batch_mean: torch.Tensor, batch_var: torch.Tensor) -> None:
        """Merge the moments of ``n`` samples into the running ones (float64 arithmetic)."""
        count = self.count
        total = count + n
        mean = self.mean.to(torch.float64)
        delta = batch_mean - mean
        m2 = self.var.to(torch.float64) * count + batch_var * n + delta.pow(2) * count * n / total
        self.mean.copy_(mean + delta * n / total)
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / sqrt(var + eps)`` clipped to ``±clip``, as float32."""
        return ((x.float() - self.mean) / (self.var + self.eps).sqrt()).clamp(-self.clip, self.clip)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """``x / sqrt(var + eps)`` clipped to ``±clip`` (rewards: divided by the return's std, not centred)."""
        return (x.float() / (self.var + self.eps).sqrt()).clamp(-self.clip, self.clip)


def discounted_returns(
    reward: torch.Tensor, done: torch.Tensor, gamma: float, running: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-env running discounted return after each step of a rollout ``[T, B]``, and the one to carry on.

    ``running`` ``[B]`` is the return before the first step; it is reset to 0 after a step that ends an
    episode (as ``VecNormalize``: ``R_t = γ R_{t-1} + r_t``, then ``R_t = 0`` where done).
    """
    out = torch.empty(reward.shape, dtype=torch.float64, device=reward.device)
    ret = running.to(torch.float64)
    for t in range(reward.shape[0]):
        ret = gamma * ret + reward[t].to(torch.float64)
        out[t] = ret
        ret = ret.masked_fill(done[t], 0.0)
    return out, ret
