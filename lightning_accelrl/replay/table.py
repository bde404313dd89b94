"""The replay :class:`Table`: Reverb's table semantics over TensorDict items, in one process, thread-safe.

A table composes a sampler and a remover (selectors), a maximum size, a rate limiter and a storage. See
``docs/replay.md`` for the rules; each is stated by a test in ``tests/replay``. The class is split by job: inserts
in :mod:`lightning_accelrl.replay.table_insert`, sampling in :mod:`lightning_accelrl.replay.table_sampling`, state
and checkpoints in :mod:`lightning_accelrl.replay.table_state`; this module keeps construction, the lock and its
waits, the item bookkeeping, priority updates, deletes and resets.
"""

from __future__ import annotations

import itertools
import threading
import time
import warnings
from typing import Any

import numpy as np
from tensordict import TensorDictBase

from lightning_accelrl.replay.rate_limiters import Queue, RateLimiter, Stack
from lightning_accelrl.replay.selectors import Fifo, Lifo, Selector
from lightning_accelrl.replay.storage import (
    Leaves,
    Storage,
    TensorStorage,
    describe_mismatch,
    field_leaves,
)
from lightning_accelrl.replay.table_insert import TableInserts
from lightning_accelrl.replay.table_sampling import TableSampling
from lightning_accelrl.replay.table_state import TableState
from lightning_accelrl.replay.validation import as_keys, check_priorities, check_timeout

__all__ = ["SAMPLE_INFO_KEYS", "Table"]

#: Fields a sample adds to the item fields (so items may not use these names).
SAMPLE_INFO_KEYS = ("key", "priority", "probability", "times_sampled", "table_size")


class Table(TableInserts, TableSampling, TableState):
    """A replay table: insert TensorDict items with priorities, sample them as a selector picks, evict as a remover
    picks when full, and block (or time out) whenever the rate limiter says so.

    Args:
        name: non-empty table name.
        sampler: the selector that picks samples.
        remover: the selector that picks the item to evict when an insert makes the table exceed ``max_size``.
        max_size: the most items the table holds.
        rate_limiter: when inserts and samples may proceed (its counters start at zero; the table keeps its own copy).
        max_times_sampled: delete an item once sampled this many times; ``< 1`` means never.
        storage: where item data lives (default: a :class:`TensorStorage` of ``max_size`` rows).
        shared: put the storage in shared memory so other processes read it without copies.
        seed: seed for the sampler's and remover's random draws (their generator's state is part of
            :meth:`state_dict`, so a restored table continues the same sequence of draws).
    """

    def __init__(
        self,
        name: str,
        sampler: Selector,
        remover: Selector,
        max_size: int,
        rate_limiter: RateLimiter,
        max_times_sampled: int = 0,
        storage: Storage | None = None,
        shared: bool = False,
        seed: int | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError(f"table name must be a non-empty string, got {name!r}")
        if int(max_size) != max_size or max_size < 1:
            raise ValueError(f"max_size must be a positive integer, got {max_size!r}")
        for role, sel in (("sampler", sampler), ("remover", remover)):
            if not isinstance(sel, Selector):
                raise TypeError(
                    f"{role} must be a selector from lightning_accelrl.replay.selectors, got {sel!r}"
                )
        if not isinstance(rate_limiter, RateLimiter):
            raise TypeError(f"rate_limiter must be a RateLimiter, got {rate_limiter!r}")
        self.name = name
        self.max_size = int(max_size)
        self.max_times_sampled = int(max_times_sampled) if max_times_sampled >= 1 else 0
        if rate_limiter.min_size_to_sample > self.max_size:
            warnings.warn(
                f"table {name!r}: min_size_to_sample {rate_limiter.min_size_to_sample} > max_size {self.max_size}, "
                "so sampling can never start",
                UserWarning,
                stacklevel=2,
            )
        if storage is None:
            storage = TensorStorage(self.max_size)
        if storage.capacity < self.max_size:
            raise ValueError(f"storage capacity {storage.capacity} < max_size {self.max_size}")
        self.storage: Storage = storage
        # Slot ``max_size`` is scratch: an incoming item waits there while the remover decides what to evict.
        cap = self.max_size + 1
        self._scratch = self.max_size
        self.sampler = sampler.bind(cap)
        self.remover = remover.bind(cap)
        self._max_priority = min(self.sampler.max_priority, self.remover.max_priority)
        # The priority of an item inserted without one: the largest any item has been given (prioritized experience
        # replay's p_max, so a new item is sampled at least as often as any other until its first update).
        self._top_priority = 1.0
        self._limiter = rate_limiter.clone()
        self._cond = threading.Condition(threading.Lock())
        self._rng = np.random.default_rng(seed)
        self._key = np.full(cap, -1, dtype=np.int64)
        self._priority = np.zeros(cap, dtype=np.float64)
        self._times = np.zeros(cap, dtype=np.int64)
        self._recency = np.zeros(cap, dtype=np.int64)
        self._mark = np.zeros(cap, dtype=np.int64)  # scratch counter of repeated slots in a sample (all zero)
        self._slot_of: dict[int, int] = {}  # key -> slot, in insertion order (keys only grow)
        self._free = list(range(self.max_size - 1, -1, -1))
        self._next_key = 0
        self._next_recency = 0
        self._sum_times = 0  # sum of times_sampled over present items, for max_times_sampled supply checks
        self._fields: tuple | None = None
        self._blocked_insert_s = 0.0
        self._blocked_sample_s = 0.0
        self._waiting_inserts = 0
        self._waiting_samples = 0
        if shared:
            self.share_memory_()

    # -- constructors ----------------------------------------------------------------------------------------
    @classmethod
    def queue(cls, name: str, max_size: int, **kwargs: Any) -> Table:
        """A FIFO queue: every item is sampled exactly once, in insertion order; inserts block when full."""
        return cls(name, Fifo(), Fifo(), max_size, Queue(max_size), max_times_sampled=1, **kwargs)

    @classmethod
    def stack(cls, name: str, max_size: int, **kwargs: Any) -> Table:
        """A LIFO stack: every item is sampled exactly once, newest first; inserts block when full."""
        return cls(name, Lifo(), Lifo(), max_size, Stack(max_size), max_times_sampled=1, **kwargs)

    # -- sizes and stats -------------------------------------------------------------------------------------
    @property
    def size(self) -> int:
        return len(self._slot_of)

    def __len__(self) -> int:
        return len(self._slot_of)

    @property
    def rate_limiter(self) -> RateLimiter:
        return self._limiter

    def info(self) -> dict[str, Any]:
        """Sizes, limiter counters and band, and the seconds inserts and samples spent blocked on the limiter."""
        with self._cond:
            lim = self._limiter.state()
            return {
                "name": self.name,
                "size": len(self._slot_of),
                "max_size": self.max_size,
                "max_times_sampled": self.max_times_sampled,
                "sampler": repr(self.sampler),
                "remover": repr(self.remover),
                "inserts": lim["inserts"],
                "samples": lim["samples"],
                "deletes": lim["deletes"],
                "rate_limiter": lim,
                "insert_blocked_s": self._blocked_insert_s,
                "sample_blocked_s": self._blocked_sample_s,
                "waiting_inserts": self._waiting_inserts,
                "waiting_samples": self._waiting_samples,
                "next_key": self._next_key,
            }

    def __repr__(self) -> str:
        return (
            f"Table(name={self.name!r}, sampler={self.sampler!r}, remover={self.remover!r}, "
            f"max_size={self.max_size}, rate_limiter={self._limiter!r}, max_times_sampled={self.max_times_sampled}, "
            f"size={len(self._slot_of)})"
        )

    def share_memory_(self) -> Table:
        """Move the item storage to shared memory (see :meth:`Storage.share_memory_`)."""
        with self._cond:
            self.storage.share_memory_()
        return self

    # -- validation helpers ----------------------------------------------------------------------------------
    def _check_fields(self, items: TensorDictBase) -> Leaves | None:
        """The first insert fixes the fields; later inserts must match (checked before anything changes).
        Returns the items' fields when they come in the table's field order (so the storage can skip its own
        walk over them), else None."""
        leaves = field_leaves(items)
        signature = tuple((k, v.dtype, v.shape[1:]) for k, v in leaves)
        if signature == self._fields:
            return leaves
        given = {k: (d, s) for k, d, s in signature}
        if self._fields is None:
            clash = [k[0] for k in given if k[0] in SAMPLE_INFO_KEYS]
            if clash:
                raise ValueError(
                    f"item fields {clash} clash with the fields a sample adds: {SAMPLE_INFO_KEYS}"
                )
            if not given:
                raise ValueError("items have no tensor fields")
            self._fields = signature
            return leaves
        expected = {k: (d, s) for k, d, s in self._fields}
        if given != expected:
            raise ValueError(describe_mismatch(expected, given, f"table {self.name!r}'s"))
        return None

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        timeout = check_timeout(timeout)
        return None if timeout is None else time.monotonic() + timeout

    def _notify(self) -> None:
        """Wake the inserts and samples blocked on the limiter, if any (the counters change under the lock)."""
        if self._waiting_inserts or self._waiting_samples:
            self._cond.notify_all()

    def _wait(self, deadline: float | None, inserting: bool) -> bool:
        """Wait until notified or the deadline, recording the blocked time; False once the deadline has passed."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        start = time.monotonic()
        if inserting:
            self._waiting_inserts += 1
        else:
            self._waiting_samples += 1
        try:
            self._cond.wait(remaining)
        finally:
            blocked = time.monotonic() - start
            if inserting:
                self._waiting_inserts -= 1
                self._blocked_insert_s += blocked
            else:
                self._waiting_samples -= 1
                self._blocked_sample_s += blocked
        return True

    def _add_item(self, slot: int, key: int, priority: float, recency: int) -> None:
        self._set_meta(slot, key, priority, recency)
        self._slot_of[key] = slot
        self.sampler.add_one(slot, priority, recency)
        self.remover.add_one(slot, priority, recency)

    def _set_meta(self, slot: int, key: int, priority: float, recency: int) -> None:
        self._key[slot] = key
        self._priority[slot] = priority
        self._times[slot] = 0
        self._recency[slot] = recency

    def _remove_item(self, slot: int, remover: bool = True) -> None:
        """Forget the item in ``slot`` (sampler, remover unless it already dropped it, key map) and free the slot;
        no limiter or storage call."""
        del self._slot_of[int(self._key[slot])]
        self.sampler.remove(slot)
        if remover:
            self.remover.remove(slot)
        self._sum_times -= int(self._times[slot])
        self._free.append(slot)

    def _remove_items(self, slots: list[int], remover: bool = True) -> None:
        """:meth:`_remove_item` for several distinct slots at once (freed in the order given)."""
        if len(slots) < 4:
            for slot in slots:
                self._remove_item(slot, remover)
            return
        arr = np.array(slots, dtype=np.int64)
        slot_of = self._slot_of
        for key in self._key[arr].tolist():
            del slot_of[key]
        self.sampler.remove_many(arr)
        if remover:
            self.remover.remove_many(arr)
        self._sum_times -= int(self._times[arr].sum())
        self._free.extend(slots)

    # -- priorities, deletes, reset --------------------------------------------------------------------------
    def _slots_of(self, keys: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """Slots of the present keys among ``keys`` and a mask of which keys were present."""
        slots = np.fromiter(
            map(self._slot_of.get, keys, itertools.repeat(-1)), dtype=np.int64, count=len(keys)
        )
        present = slots >= 0
        return slots[present], present

    def update_priorities(self, keys: Any, priorities: Any) -> None:
        """Set new priorities (sampler and remover both see them; heaps re-order). Unknown keys are ignored; a
        negative or NaN priority is a ``ValueError`` and nothing changes. For repeated keys the last one wins."""
        key_list = as_keys(keys).tolist()
        p = check_priorities(priorities, len(key_list), self._max_priority)
        if len(set(key_list)) != len(key_list):  # keep the last occurrence of each key, in batch order
            keep = sorted({k: i for i, k in enumerate(key_list)}.values())
            key_list, p = [key_list[i] for i in keep], p[keep]
        with self._cond:
            slots, present = self._slots_of(key_list)
            if len(slots) == 0:
                return
            if len(slots) < len(key_list):
                p = p[present]
            recency = np.arange(self._next_recency, self._next_recency + len(slots), dtype=np.int64)
            self._next_recency += len(slots)
            self._priority[slots] = p
            self._recency[slots] = recency
            self._top_priority = max(self._top_priority, float(p.max()))
            self.sampler.update(slots, p, recency)
            self.remover.update(slots, p, recency)

    def delete(self, keys: Any) -> int:
        """Delete items by key (unknown keys are ignored); each counts as a limiter delete. Returns how many."""
        with self._cond:
            slots, _ = self._slots_of(as_keys(keys).tolist())
            slots = np.unique(slots)
            self._remove_items(slots.tolist())
            if len(slots):
                self._limiter.deletes += len(slots)
                self.storage.release(slots.tolist())
                self._cond.notify_all()
            return len(slots)

    def reset(self) -> None:
        """Remove every item and zero the limiter counters (and the blocked-time stats). Keys are never reused."""
        with self._cond:
            self._clear_items()
            self._limiter.reset()
            self._top_priority = 1.0
            self._blocked_insert_s = 0.0
            self._blocked_sample_s = 0.0
            self._cond.notify_all()

    def _clear_items(self) -> None:
        self.sampler.clear()
        self.remover.clear()
        self.storage.clear()
        self._slot_of.clear()
        self._free = list(range(self.max_size - 1, -1, -1))
        self._sum_times = 0
