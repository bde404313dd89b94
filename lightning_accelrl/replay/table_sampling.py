"""Sampling from a replay :class:`~lightning_accelrl.replay.Table` (a part of it, by job): wait for the limiter,
pick with the sampler, count times sampled, remove items sampled ``max_times_sampled`` times, gather the data."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import numpy as np
import torch
from tensordict import TensorDict

from lightning_accelrl.replay.rate_limiters import RateLimiter
from lightning_accelrl.replay.selectors import Selector
from lightning_accelrl.replay.storage import NestedKey, Storage, new_tensordict
from lightning_accelrl.replay.validation import check_count

__all__ = ["TableSampling"]


class TableSampling:
    """The sampling methods of :class:`~lightning_accelrl.replay.Table` (they use its lock, ``_deadline``,
    ``_wait``, ``_notify`` and ``_remove_item``)."""

    name: str
    max_size: int
    max_times_sampled: int
    sampler: Selector
    storage: Storage
    _cond: threading.Condition
    _limiter: RateLimiter
    _rng: np.random.Generator
    _slot_of: dict[int, int]
    _times: np.ndarray
    _mark: np.ndarray
    _key: np.ndarray
    _priority: np.ndarray
    _sum_times: int

    def sample(
        self,
        num_samples: int,
        timeout: float | None = None,
        out: Mapping[NestedKey, torch.Tensor] | None = None,
    ) -> TensorDict:
        """Sample ``num_samples`` items (with replacement) once the limiter admits them all.

        Returns a TensorDict [num_samples] with the item fields plus ``key`` (int64), ``priority`` and
        ``probability`` (float64), ``times_sampled`` (int64, this sample included) and ``table_size`` (int64).
        ``out``: tensors of ``num_samples`` rows by field that the storage may gather the item fields into.
        """
        n = check_count(num_samples)
        lim = self._limiter
        if n > lim.max_sample_batch():
            raise ValueError(
                f"sample({n}) can never be admitted by {lim!r}: n > max_diff - min_diff = {lim.max_sample_batch():g}"
            )
        if self.max_times_sampled and n > self.max_size * self.max_times_sampled:
            raise ValueError(
                f"sample({n}) can never be supplied: at most max_size * max_times_sampled = "
                f"{self.max_size * self.max_times_sampled} samples are ever available at once"
            )
        deadline = self._deadline(timeout)
        with self._cond:
            while not (lim.can_sample(n) and self._can_supply(n)):
                if not self._wait(deadline, False):
                    raise TimeoutError(
                        f"table {self.name!r}: sample({n}) timed out after {timeout} s; nothing was sampled "
                        f"(size {len(self._slot_of)}, limiter {self._limiter.counts()})"
                    )
            batch = self._sample_now(n, out)
            self._notify()
        return batch

    def _can_supply(self, n: int) -> bool:
        size = len(self._slot_of)
        if not self.max_times_sampled:
            return size > 0
        return size * self.max_times_sampled - self._sum_times >= n

    def _sample_now(self, n: int, out: Mapping[NestedKey, torch.Tensor] | None) -> TensorDict:
        lim = self._limiter
        size = len(self._slot_of)
        exhausted: list[int] = []
        if not self.max_times_sampled:
            slots, probs = self.sampler.sample(n, self._rng)
            times = self._times
            if n == 1:
                times[slots] += 1
                counts = times[slots]
            else:
                # How often each slot occurs in this sample (a scratch counter, zeroed again after)
                mark = self._mark
                np.add.at(mark, slots, 1)
                repeats = mark[slots]
                mark[slots] = 0
                before = times[slots]
                times[slots] = (
                    before + repeats
                )  # a repeated slot gets the same total at each of its positions
                counts = before + 1
                multi = np.flatnonzero(repeats > 1)
                if len(multi) > 64:
                    counts += _occurrence(slots)[0]
                elif len(multi):  # the k-th occurrence of a slot in this sample counts k - 1 earlier ones
                    seen: dict[int, int] = {}
                    for i, slot in zip(multi.tolist(), slots[multi].tolist()):
                        k = seen.get(slot, 0)
                        counts[i] += k
                        seen[slot] = k + 1
            self._sum_times += n
            keys = self._key[slots]
            priorities = self._priority[slots]
            sizes = np.full(n, size, dtype=np.int64)
        else:
            slots = np.empty(n, dtype=np.int64)
            probs = np.empty(n, dtype=np.float64)
            counts = np.empty(n, dtype=np.int64)
            keys = np.empty(n, dtype=np.int64)
            priorities = np.empty(n, dtype=np.float64)
            sizes = np.empty(n, dtype=np.int64)
            times, mts = self._times, self.max_times_sampled
            for i in range(n):
                slot, prob = self.sampler.select(self._rng)
                count = int(times[slot]) + 1
                times[slot] = count
                slots[i], probs[i], counts[i], sizes[i] = slot, prob, count, size
                keys[i], priorities[i] = self._key[slot], self._priority[slot]
                self._sum_times += 1
                if count >= mts:
                    self._remove_item(slot)
                    exhausted.append(slot)
                    size -= 1
        data = self.storage.read(torch.from_numpy(slots), out)
        if exhausted:
            lim.deletes += len(exhausted)
            self.storage.release(exhausted)
        lim.samples += n
        info = {
            "key": torch.from_numpy(keys),
            "priority": torch.from_numpy(priorities),
            "probability": torch.from_numpy(np.asarray(probs, dtype=np.float64)),
            "times_sampled": torch.from_numpy(counts),
            "table_size": torch.from_numpy(sizes),
        }
        device = data.device if type(data) is TensorDict else False
        if (
            (device is None or (device and device.type == "cpu"))
            and not data.is_locked
            and getattr(data, "_td_dim_names", None) is None
        ):
            # one construction with every field, instead of validating each info field on its way in
            return new_tensordict({**data._tensordict, **info}, n, device)
        data.update(info)
        return data


def _occurrence(slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each position, how many earlier positions hold the same slot; plus the distinct slots and their counts
    (one stable sort serves both, cheaper than ``np.add.at``)."""
    n = len(slots)
    order = np.argsort(slots, kind="stable")
    ranked = slots[order]
    starts = np.empty(n, dtype=bool)
    starts[0] = True
    np.not_equal(ranked[1:], ranked[:-1], out=starts[1:])
    first = np.flatnonzero(starts)
    idx = np.arange(n)
    group_start = np.repeat(first, np.diff(np.append(first, n)))
    out = np.empty(n, dtype=np.int64)
    out[order] = idx - group_start
    return out, ranked[first], np.diff(np.append(first, n))
