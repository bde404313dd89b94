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
        """One step of all envs: ``reward`` float [B], ``done`` bool [B] (CPU tensors)."""
        self.update_rollout(reward.numpy()[None], done.numpy()[None])

    def update_rollout(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        """``T`` steps at once (``[T, B]`` arrays): the same sums, in the same order, as ``T`` calls of :meth:`update`.

        The samplers call this once per rollout: numpy only, and per-step work only on rows where an episode ended.
        """
        steps = len(rewards)
        # rows where some episode ended (a single row without the slower axis reduction: DQN collects one step)
        ended_rows = np.flatnonzero(dones.any(axis=1)) if steps > 1 else range(int(dones.any()))
        start = 0
        for t in ended_rows:
            for r in rewards[start : t + 1]:  # one add per step, in order: bit-identical float sums
                self.returns += r
            idx = dones[t].nonzero()[0]
            self.recent_returns.extend(self.returns[idx].tolist())
            self.recent_lengths.extend((self.lengths[idx] + (t + 1)).tolist())
            self.episodes += len(idx)
            self.returns[idx] = 0.0
            self.lengths[idx] = -(t + 1)  # + steps below: the steps after the reset
            start = t + 1
        for r in rewards[start:]:
            self.returns += r
        self.lengths += steps

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
