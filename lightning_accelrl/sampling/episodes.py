"""Per-env running returns and lengths, and a window of finished episodes."""

from __future__ import annotations

from collections import deque

import numpy as np
import torch


class EpisodeTracker:
    """Tracks returns/lengths per env; finished episodes go to a window (for means) and a pending list (for logs)."""

    def __init__(self, num_envs: int, window: int = 100) -> None:
        self.returns = np.zeros(num_envs, dtype=np.float64)
        self.lengths = np.zeros(num_envs, dtype=np.int64)
        self.recent_returns: deque[float] = deque(maxlen=window)
        self.recent_lengths: deque[int] = deque(maxlen=window)
        self.episodes = 0

    def update(self, reward: torch.Tensor, done: torch.Tensor) -> None:
        self.returns += reward.numpy()
        self.lengths += 1
        d = done.numpy()
        if d.any():
            idx = np.flatnonzero(d)
            self.recent_returns.extend(self.returns[idx].tolist())
            self.recent_lengths.extend(self.lengths[idx].tolist())
            self.episodes += len(idx)
            self.returns[idx] = 0.0
            self.lengths[idx] = 0

    def return_sum_count(self) -> tuple[float, int]:
        """(sum, count) of the window's returns: the pair to all-reduce for a cross-rank mean."""
        return float(sum(self.recent_returns)), len(self.recent_returns)

    def state_dict(self) -> dict:
        # plain Python types only: torch.load(weights_only=True), Lightning's default on resume, rejects numpy
        return {
            "returns": self.returns.tolist(),
            "lengths": self.lengths.tolist(),
            "recent_returns": list(self.recent_returns),
            "recent_lengths": list(self.recent_lengths),
            "episodes": self.episodes,
        }

    def load_state_dict(self, state: dict) -> None:
        # Running (unfinished) episodes restart after a resume: the envs are reset, so only the window carries over.
        self.recent_returns.clear()
        self.recent_returns.extend(state["recent_returns"])
        self.recent_lengths.clear()
        self.recent_lengths.extend(state["recent_lengths"])
        self.episodes = int(state["episodes"])
