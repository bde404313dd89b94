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
        self._step(reward.numpy(), done.numpy())

    def _step(self, reward: np.ndarray, done: np.ndarray) -> None:
        self.returns += reward
        self.lengths += 1
        if np.count_nonzero(done):
            idx = done.nonzero()[0]
            self.recent_returns.extend(self.returns[idx].tolist())
            self.recent_lengths.extend(self.lengths[idx].tolist())
            self.episodes += len(idx)
            self.returns[idx] = 0.0
            self.lengths[idx] = 0

    def update_rollout(self, rewards: np.ndarray, dones: np.ndarray) -> None:
        """``T`` steps at once (``[T, B]`` arrays), as ``T`` calls of :meth:`update` but without a loop over steps.

        Episodes are read off cumulative sums (float64): the sums equal step-by-step sums wherever those are exact,
        e.g. for float32 rewards of similar magnitude (integer and clipped rewards always).
        """
        if len(rewards) == 1:  # one step (DQN's collect): the direct update is ~6x cheaper
            return self._step(rewards[0], dones[0])
        T = len(rewards)
        cum = np.zeros((T + 1, rewards.shape[1]))
        np.cumsum(rewards, axis=0, out=cum[1:])  # cum[k]: sum of the rollout's first k rewards
        steps = np.arange(1, T + 1)[:, None]
        # begin[t]: how many rollout steps passed before the episode that row t belongs to began
        begin = np.zeros(rewards.shape, dtype=np.int64)
        np.maximum.accumulate(np.where(dones[:-1], steps[:-1], 0), axis=0, out=begin[1:])
        carried = begin == 0  # the episode began before this rollout: add what it had gathered then
        if dones.any():
            t, b = dones.nonzero()  # row-major: the order of step-by-step updates
            ret = cum[t + 1, b] - cum[begin[t, b], b] + np.where(carried[t, b], self.returns[b], 0.0)
            length = t + 1 - begin[t, b] + np.where(carried[t, b], self.lengths[b], 0)
            self.recent_returns.extend(ret.tolist())
            self.recent_lengths.extend(length.tolist())
            self.episodes += len(t)
        # the running episodes: those begun at the last done, or before the rollout
        last = np.where(dones[-1], T, begin[-1])
        cols = np.arange(rewards.shape[1])
        self.returns = cum[T] - cum[last, cols] + np.where(last == 0, self.returns, 0.0)
        self.lengths = T - last + np.where(last == 0, self.lengths, 0)

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
