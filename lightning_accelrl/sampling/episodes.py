"""Per-env running returns and lengths, and a window of finished episodes.

Optionally also the *score*: the episode sum of a second reward stream, e.g. Atari's raw game reward where the
learner sees clipped rewards (the return is then the clipped sum, which is not the score papers report).
"""

from __future__ import annotations

import math
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
        self.scores = np.zeros(num_envs, dtype=np.float64)  # running scores (only when scores are given)
        #: scores of finished episodes, aligned with the most recent ``recent_returns`` (empty without scores)
        self.recent_scores: deque[float] = deque(maxlen=window)

    def update(self, reward: torch.Tensor, done: torch.Tensor, score: torch.Tensor | None = None) -> None:
        """One step of all envs: ``reward`` float [B], ``done`` bool [B], optional ``score`` reward [B] (CPU)."""
        self._step(reward.numpy(), done.numpy(), None if score is None else score.numpy())

    def _step(self, reward: np.ndarray, done: np.ndarray, score: np.ndarray | None = None) -> None:
        self.returns += reward
        self.lengths += 1
        if score is not None:
            self.scores += score
        if np.count_nonzero(done):
            idx = done.nonzero()[0]
            self.recent_returns.extend(self.returns[idx].tolist())
            self.recent_lengths.extend(self.lengths[idx].tolist())
            self.episodes += len(idx)
            self.returns[idx] = 0.0
            self.lengths[idx] = 0
            if score is not None:
                self.recent_scores.extend(self.scores[idx].tolist())
                self.scores[idx] = 0.0

    def update_rollout(
        self, rewards: np.ndarray, dones: np.ndarray, scores: np.ndarray | None = None
    ) -> None:
        """``T`` steps at once (``[T, B]`` arrays), as ``T`` calls of :meth:`update` but without a loop over steps.

        Episodes are read off cumulative sums (float64): the sums equal step-by-step sums wherever those are exact,
        e.g. for float32 rewards of similar magnitude (integer and clipped rewards always). ``scores``: an optional
        second reward stream ``[T, B]`` summed per episode the same way (:attr:`recent_scores`).
        """
        if len(rewards) == 1:  # one step (DQN's collect): the direct update is ~6x cheaper
            return self._step(rewards[0], dones[0], None if scores is None else scores[0])
        T = len(rewards)
        steps = np.arange(1, T + 1)[:, None]
        # begin[t]: how many rollout steps passed before the episode that row t belongs to began
        begin = np.zeros(rewards.shape, dtype=np.int64)
        np.maximum.accumulate(np.where(dones[:-1], steps[:-1], 0), axis=0, out=begin[1:])
        carried = begin == 0  # the episode began before this rollout: add what it had gathered then
        # the running episodes after the rollout: those begun at the last done, or before the rollout
        last = np.where(dones[-1], T, begin[-1])
        t, b = dones.nonzero()  # row-major: the order of step-by-step updates
        if len(t):
            length = t + 1 - begin[t, b] + np.where(carried[t, b], self.lengths[b], 0)
            self.recent_lengths.extend(length.tolist())
            self.episodes += len(t)
        self.lengths = T - last + np.where(last == 0, self.lengths, 0)
        finished, self.returns = _episode_sums(rewards, t, b, begin, carried, last, self.returns)
        self.recent_returns.extend(finished.tolist())
        if scores is not None:
            finished, self.scores = _episode_sums(scores, t, b, begin, carried, last, self.scores)
            self.recent_scores.extend(finished.tolist())

    def last(self, n: int) -> list[tuple[float, float, float]]:
        """The ``n`` most recent finished episodes (at most the window) as (return, length, score), oldest first;
        score is NaN without scores. What sampler processes hand to the learner (see :meth:`add`)."""
        n = min(n, len(self.recent_returns))
        if n <= 0:
            return []
        rets, lens = list(self.recent_returns)[-n:], list(self.recent_lengths)[-n:]
        # scores belong to the most recent episodes (those since the env began to report them)
        k = min(n, len(self.recent_scores))
        scores = [math.nan] * (n - k) + (list(self.recent_scores)[-k:] if k else [])
        return [(float(r), float(m), float(s)) for r, m, s in zip(rets, lens, scores, strict=True)]

    def add(self, ret: float, length: float, score: float = math.nan) -> None:
        """One finished episode from elsewhere (a sampler process): into the window, its score if it has one."""
        self.recent_returns.append(ret)
        self.recent_lengths.append(int(length))
        if not math.isnan(score):
            self.recent_scores.append(score)
        self.episodes += 1

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
            "recent_scores": list(self.recent_scores),
            "episodes": self.episodes,
        }

    def load_state_dict(self, state: dict) -> None:
        # Running (unfinished) episodes restart after a resume: the envs are reset, so only the window carries over.
        self.recent_returns.clear()
        self.recent_returns.extend(state["recent_returns"])
        self.recent_lengths.clear()
        self.recent_lengths.extend(state["recent_lengths"])
        self.recent_scores.clear()
        self.recent_scores.extend(state["recent_scores"])
        self.episodes = int(state["episodes"])


def _episode_sums(
    values: np.ndarray,
    t: np.ndarray,
    b: np.ndarray,
    begin: np.ndarray,
    carried: np.ndarray,
    last: np.ndarray,
    running: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``values`` [T, B] over the episodes that ended at (t, b), and the new running sums.

    ``begin``/``carried``/``last`` locate the episodes (see :meth:`EpisodeTracker.update_rollout`); ``running``
    holds what the episodes running at the start of the rollout had gathered before it."""
    T = len(values)
    cum = np.zeros((T + 1, values.shape[1]))
    np.cumsum(values, axis=0, out=cum[1:])  # cum[k]: sum of the rollout's first k values
    finished = cum[t + 1, b] - cum[begin[t, b], b] + np.where(carried[t, b], running[b], 0.0)
    cols = np.arange(values.shape[1])
    return finished, cum[T] - cum[last, cols] + np.where(last == 0, running, 0.0)
