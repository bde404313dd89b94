"""Run statistics from a rank's experience source, reduced over ranks as (sum, count) pairs.

Means of episode returns are computed from all-reduced sums and counts, so a rank that finished no episode does
not bias them; env steps and sampler restarts are summed over ranks. Policy lag is reported per rank (each rank
has its own samplers, so its own lag) and over all ranks:

- ``train/policy_lag``: mean lag of the batches since the last log, over all ranks;
- ``policy_lag/rank{r}_mean``, ``policy_lag/rank{r}_max``: the run so far, rank ``r``'s batches;
- ``policy_lag/mean``, ``policy_lag/max``: the run so far, every rank's batches.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from lightning_accelrl.data.source import ExperienceSource


class LagMeter:
    """Policy lag of the training batches: a histogram of the run (bounded: lags are small integers), the run's
    mean and max, and the sum and count since the last read (for logging)."""

    def __init__(self) -> None:
        self.histogram: dict[int, int] = {}
        self.max = 0
        self.total = 0  # sum of the run's lags
        self._total = self._count = 0

    def add(self, lag: int | None) -> None:
        if lag is None:
            return
        self.histogram[lag] = self.histogram.get(lag, 0) + 1
        self.max = max(self.max, lag)
        self.total += lag
        self._total, self._count = self._total + lag, self._count + 1

    @property
    def batches(self) -> int:
        """Batches whose lag was measured."""
        return sum(self.histogram.values())

    @property
    def mean(self) -> float:
        """Mean lag of the run's batches (NaN before any batch)."""
        n = self.batches
        return self.total / n if n else math.nan

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

    def take_window(self) -> tuple[float, int]:
        """(sum, count) of the lags since the last call."""
        window = (float(self._total), self._count)
        self._total = self._count = 0
        return window


def reduced_statistics(
    source: ExperienceSource, wall_time: float, lags: LagMeter, strategy: Any = None
) -> dict[str, float]:
    """Episode statistics, env steps, throughput and policy lag of every rank (``strategy``: reduce over ranks in
    one all-reduce; collective)."""
    tracker = source.tracker
    extra = source.stats()  # before reading the tracker's window: sources may drain finished episodes into it
    ret_sum, count = tracker.return_sum_count()
    lag_sum, lag_count = lags.take_window()
    local = [
        ret_sum,
        float(count),
        float(sum(tracker.recent_lengths)),
        float(tracker.episodes),
        float(source.env_steps),
        float(source.restarts),
        float(sum(tracker.recent_scores)),
        float(len(tracker.recent_scores)),
        lag_sum,
        float(lag_count),
    ]
    rank, world = (0, 1) if strategy is None else (strategy.global_rank, strategy.world_size)
    # each rank fills its own slot of the per-rank block: summing over ranks gathers them
    per_rank = [0.0] * (_LAG_FIELDS * world)
    per_rank[_LAG_FIELDS * rank : _LAG_FIELDS * (rank + 1)] = [
        float(lags.total),
        float(lags.batches),
        lags.max,
    ]
    values = local + per_rank
    if strategy is not None:
        t = torch.tensor(values, dtype=torch.float64, device=strategy.root_device)
        values = strategy.reduce(t, reduce_op="sum").tolist()
    ret_sum, count, len_sum, episodes, env_steps, restarts, score_sum, score_count, lag_sum, lag_count = (
        values[: len(local)]
    )
    stats = {
        "env_steps": env_steps,
        "episodes": episodes,
        "env_steps_per_s": env_steps / max(wall_time, 1e-9),
    }
    stats.update(extra)
    if restarts:
        stats["async/sampler_restarts"] = restarts  # over all ranks
    if lag_count > 0:
        stats["train/policy_lag"] = lag_sum / lag_count  # since the last log, over all ranks
    stats.update(lag_by_rank(values[len(local) :]))
    if count > 0:
        stats["episode_window_count"] = count
        stats["episode_return_mean"] = ret_sum / count
        stats["episode_length_mean"] = len_sum / count
    if score_count > 0:  # the game's own score where rewards are clipped (Atari): what papers report
        stats["episode_score_mean"] = score_sum / score_count
    return stats


_LAG_FIELDS = 3  # per rank: sum of the run's lags, batches measured, max


def lag_by_rank(per_rank: list[float]) -> dict[str, float]:
    """The run's policy lag per rank (``policy_lag/rank{r}_mean``, ``policy_lag/rank{r}_max``) and over all
    ranks (``policy_lag/mean``, ``policy_lag/max``), from ``_LAG_FIELDS`` values per rank; empty before any
    measured batch."""
    stats: dict[str, float] = {}
    total = batches = 0.0
    worst = -math.inf
    for r in range(len(per_rank) // _LAG_FIELDS):
        lag_sum, n, lag_max = per_rank[_LAG_FIELDS * r : _LAG_FIELDS * (r + 1)]
        if n > 0:
            stats[f"policy_lag/rank{r}_mean"] = lag_sum / n
            stats[f"policy_lag/rank{r}_max"] = lag_max
            total, batches, worst = total + lag_sum, batches + n, max(worst, lag_max)
    if batches > 0:
        stats["policy_lag/mean"] = total / batches
        stats["policy_lag/max"] = worst
    return stats
