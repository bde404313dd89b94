"""Run statistics from a rank's experience source, reduced over ranks as (sum, count) pairs.

Means of episode returns are computed from all-reduced sums and counts, so a rank that finished no episode does
not bias them; env steps and sampler restarts are summed over ranks.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lightning_accelrl.data.source import ExperienceSource


class LagMeter:
    """Policy lag of the training batches: a histogram of the run (bounded: lags are small integers), and the
    mean since the last read (for logging)."""

    def __init__(self) -> None:
        self.histogram: dict[int, int] = {}
        self.max = 0
        self._total = self._count = 0

    def add(self, lag: int | None) -> None:
        if lag is None:
            return
        self.histogram[lag] = self.histogram.get(lag, 0) + 1
        self.max = max(self.max, lag)
        self._total, self._count = self._total + lag, self._count + 1

    @property
    def batches(self) -> int:
        """Batches whose lag was measured."""
        return sum(self.histogram.values())

    def quantile(self, q: float) -> float:
        """The ``q``-quantile of the run's lags (NaN before any batch)."""
        n = self.batches
        if n == 0:
            return math.nan
        rank, seen = min(n - 1, int(q * n)), 0
        for lag in sorted(self.histogram):
            seen += self.histogram[lag]
            if seen > rank:
                return float(lag)
        return float(self.max)

    def take_mean(self) -> float | None:
        """Mean lag of the batches since the last call (None if there were none)."""
        if self._count == 0:
            return None
        mean = self._total / self._count
        self._total = self._count = 0
        return mean


def reduced_statistics(
    source: ExperienceSource, wall_time: float, lags: LagMeter, strategy: Any = None
) -> dict[str, float]:
    """Episode statistics, env steps and throughput of every rank (``strategy``: reduce over ranks; collective)."""
    tracker = source.tracker
    extra = source.stats()  # before reading the tracker's window: sources may drain finished episodes into it
    ret_sum, count = tracker.return_sum_count()
    local = [
        ret_sum,
        float(count),
        float(sum(tracker.recent_lengths)),
        float(tracker.episodes),
        float(source.env_steps),
        float(source.restarts),
        float(sum(tracker.recent_scores)),
        float(len(tracker.recent_scores)),
    ]
    if strategy is not None:
        t = torch.tensor(local, dtype=torch.float64, device=strategy.root_device)
        local = strategy.reduce(t, reduce_op="sum").tolist()
    ret_sum, count, len_sum, episodes, env_steps, restarts, score_sum, score_count = local
    stats = {
        "env_steps": env_steps,
        "episodes": episodes,
        "env_steps_per_s": env_steps / max(wall_time, 1e-9),
    }
    stats.update(extra)
    if restarts:
        stats["async/sampler_restarts"] = restarts  # over all ranks
    lag = lags.take_mean()
    if lag is not None:
        stats["train/policy_lag"] = lag
    if count > 0:
        stats["episode_window_count"] = count
        stats["episode_return_mean"] = ret_sum / count
        stats["episode_length_mean"] = len_sum / count
    if score_count > 0:  # the game's own score where rewards are clipped (Atari): what papers report
        stats["episode_score_mean"] = score_sum / score_count
    return stats
