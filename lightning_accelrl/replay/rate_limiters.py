"""Rate limiters: Reverb's rules for when a table admits inserts and samples.

A limiter holds the cumulative counts of inserts ``I``, samples ``S`` and deletes ``D`` (since construction, reset
or restore) and four numbers: ``samples_per_insert`` (spi), ``min_size_to_sample``, ``min_diff`` and ``max_diff``::

    can_insert(n):  allowed if I + n - D <= min_size        (still filling up to min_size)
                    else allowed iff (I + n) * spi - S <= max_diff
    can_sample(n):  refused if I - D < min_size
                    else allowed iff I * spi - S - n >= min_diff

The limiter only decides; the table waits on its condition and records the counts.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

__all__ = ["MinSize", "Queue", "RateLimiter", "SampleToInsertRatio", "Stack"]


class RateLimiter:
    """The general limiter; the subclasses below only choose its four numbers (and validate them)."""

    def __init__(
        self, samples_per_insert: float, min_size_to_sample: int, min_diff: float, max_diff: float
    ) -> None:
        self.samples_per_insert = float(samples_per_insert)
        self.min_size_to_sample = int(min_size_to_sample)
        self.min_diff = float(min_diff)
        self.max_diff = float(max_diff)
        self.inserts = 0
        self.samples = 0
        self.deletes = 0

    # -- decisions -------------------------------------------------------------------------------------------
    def can_insert(self, n: int = 1) -> bool:
        """Whether ``n`` more inserts keep the sample/insert difference within the band."""
        if self.inserts + n - self.deletes <= self.min_size_to_sample:
            return True
        return (self.inserts + n) * self.samples_per_insert - self.samples <= self.max_diff

    def can_sample(self, n: int = 1) -> bool:
        """Whether ``n`` more samples are allowed (enough items and not ahead of the inserts)."""
        if self.inserts - self.deletes < self.min_size_to_sample:
            return False
        return self.inserts * self.samples_per_insert - self.samples - n >= self.min_diff

    def max_sample_batch(self) -> float:
        """The largest ``n`` that ``can_sample(n)`` can ever allow: ``max_diff - min_diff``."""
        return self.max_diff - self.min_diff

    def counts(self) -> str:
        """The counters and band in one line, for error messages."""
        return (
            f"I={self.inserts} S={self.samples} D={self.deletes}, band [{self.min_diff:g}, {self.max_diff:g}]"
        )

    # -- bookkeeping -----------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Zero the counters (the table's reset and restore call this)."""
        self.inserts = self.samples = self.deletes = 0

    def state(self) -> dict[str, Any]:
        """Config and counters as plain values (for ``info()`` and checkpoints)."""
        return {
            "type": type(self).__name__,
            "samples_per_insert": self.samples_per_insert,
            "min_size_to_sample": self.min_size_to_sample,
            "min_diff": self.min_diff,
            "max_diff": self.max_diff,
            "inserts": self.inserts,
            "samples": self.samples,
            "deletes": self.deletes,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RateLimiter:
        """Rebuild a limiter of the recorded type with its numbers and counters (no re-validation)."""
        kind = _LIMITERS.get(state["type"], RateLimiter)
        limiter = RateLimiter.__new__(kind)
        RateLimiter.__init__(
            limiter,
            state["samples_per_insert"],
            state["min_size_to_sample"],
            state["min_diff"],
            state["max_diff"],
        )
        limiter.inserts = int(state["inserts"])
        limiter.samples = int(state["samples"])
        limiter.deletes = int(state["deletes"])
        return limiter

    def clone(self) -> RateLimiter:
        """A fresh copy with zero counters, so a limiter object passed to two tables does not mix their counts."""
        copy = RateLimiter.from_state(self.state())
        copy.reset()
        return copy

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(samples_per_insert={self.samples_per_insert:g}, "
            f"min_size_to_sample={self.min_size_to_sample}, min_diff={self.min_diff:g}, "
            f"max_diff={self.max_diff:g})"
        )


class MinSize(RateLimiter):
    """Block sampling until ``min_size_to_sample`` items are in the table; never block inserts."""

    def __init__(self, min_size_to_sample: int) -> None:
        if min_size_to_sample < 1:
            raise ValueError(f"MinSize needs min_size_to_sample >= 1, got {min_size_to_sample}")
        super().__init__(1.0, min_size_to_sample, -math.inf, math.inf)


class SampleToInsertRatio(RateLimiter):
    """Hold the number of samples per insert near ``samples_per_insert`` (the replay ratio).

    ``error_buffer`` is the allowed slack: a number ``e`` gives the band
    ``[min_size * spi - e, min_size * spi + e]``; a pair gives ``(min_diff, max_diff)`` directly.
    """

    def __init__(
        self,
        samples_per_insert: float,
        min_size_to_sample: int,
        error_buffer: float | tuple[float, float],
    ) -> None:
        if not samples_per_insert > 0:
            raise ValueError(f"samples_per_insert must be > 0, got {samples_per_insert}")
        if min_size_to_sample < 1:
            raise ValueError(f"min_size_to_sample must be >= 1, got {min_size_to_sample}")
        offset = min_size_to_sample * samples_per_insert
        if isinstance(error_buffer, (tuple, list)):
            if len(error_buffer) != 2:
                raise ValueError(f"error_buffer pair must be (min_diff, max_diff), got {error_buffer!r}")
            min_diff, max_diff = float(error_buffer[0]), float(error_buffer[1])
        else:
            min_diff, max_diff = offset - float(error_buffer), offset + float(error_buffer)
        width = max(1.0, float(samples_per_insert))
        if max_diff - min_diff < 2 * width:
            raise ValueError(
                f"error_buffer band [{min_diff:g}, {max_diff:g}] is narrower than 2 * max(1, samples_per_insert) "
                f"= {2 * width:g}: inserts and samples would block each other"
            )
        if min_diff > offset:
            raise ValueError(
                f"min_diff {min_diff:g} > samples_per_insert * min_size_to_sample = {offset:g}: "
                "deadlock as soon as min_size_to_sample items are inserted"
            )
        if max_diff < offset:
            warnings.warn(
                f"max_diff {max_diff:g} < samples_per_insert * min_size_to_sample = {offset:g}: inserts block "
                "before sampling can start, so this only works when sampling runs concurrently with inserting",
                UserWarning,
                stacklevel=2,
            )
        super().__init__(samples_per_insert, min_size_to_sample, min_diff, max_diff)


class Queue(RateLimiter):
    """Every item is sampled once, in the band [0, size]: inserts block when ``size`` items are unread."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"Queue size must be >= 1, got {size}")
        super().__init__(1.0, 1, 0.0, float(size))


class Stack(RateLimiter):
    """Same limits as :class:`Queue`; paired with Lifo selection by :meth:`Table.stack`."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"Stack size must be >= 1, got {size}")
        super().__init__(1.0, 1, 0.0, float(size))


_LIMITERS: dict[str, type[RateLimiter]] = {
    cls.__name__: cls for cls in (RateLimiter, MinSize, SampleToInsertRatio, Queue, Stack)
}
