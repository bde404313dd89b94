"""The replay :class:`Table`: Reverb's table semantics over TensorDict items, in one process, thread-safe.

A table composes a sampler and a remover (selectors), a maximum size, a rate limiter and a storage. See
``docs/replay.md`` and ``REVERB_SEMANTICS.md`` for the rules; each is stated by a test in ``tests/replay``.
"""

from __future__ import annotations

import importlib
import itertools
import math
import os
import threading
import time
import warnings
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from lightning_accelrl.replay import selectors as _selectors
from lightning_accelrl.replay.checkpoint import FORMAT_VERSION, read_checkpoint, write_checkpoint
from lightning_accelrl.replay.rate_limiters import Queue, RateLimiter, Stack
from lightning_accelrl.replay.selectors import Fifo, Lifo, Selector
from lightning_accelrl.replay.storage import (
    Storage,
    TensorStorage,
    describe_mismatch,
    field_leaves,
    new_tensordict,
)

__all__ = ["SAMPLE_INFO_KEYS", "Table"]

#: Fields a sample adds to the item fields (so items may not use these names).
SAMPLE_INFO_KEYS = ("key", "priority", "probability", "times_sampled", "table_size")
_STATE_FORMAT = "lightning_accelrl.replay.Table"


class Table:
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
        seed: seed for the sampler's and remover's random draws.
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
        self.storage = storage
        self._plain_storage = type(storage).write is TensorStorage.write
        # storages with a per-item write (FrameStackStorage) get single items without a batch dimension
        self._write_item = getattr(storage, "write_item", None)
        self._release_list = getattr(storage, "release_list", None)  # the same for a release of a few items
        self._direct_seen: tuple[Any, Any, bool] = (None, None, False)  # (storage signature, fields, same?)
        self._noop_release = type(storage).release is TensorStorage.release
        # Slot ``max_size`` is scratch: an incoming item waits there while the remover decides what to evict.
        cap = self.max_size + 1
        self._scratch = self.max_size
        self.sampler = sampler.bind(cap)
        self.remover = remover.bind(cap)
        self._finite_only = sampler.finite_priorities_only or remover.finite_priorities_only
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
    def _check_priorities(self, priority: Any, n: int) -> np.ndarray:
        if isinstance(priority, (int, float)):
            value = float(priority)
            if value >= 0 and (value != math.inf or not self._finite_only):  # NaN fails ">= 0"
                return np.full(n, value)
            p = np.array([value])
        else:
            if isinstance(priority, torch.Tensor):
                priority = priority.detach().cpu().numpy()
            p = np.asarray(priority, dtype=np.float64).reshape(-1)
            if p.size == 1 and n != 1:
                p = np.full(n, p[0])
            elif p.size != n:
                raise ValueError(f"got {p.size} priorities for {n} items")
        bad = np.isnan(p) | (p < 0)
        if self._finite_only:
            bad |= np.isinf(p)
        if bad.any():
            raise ValueError(
                f"priorities must be >= 0 and not NaN{' (and finite for Prioritized)' if self._finite_only else ''}, "
                f"got {p[bad][:5].tolist()}"
            )
        return p

    def _check_fields(self, items: TensorDictBase) -> list[torch.Tensor] | None:
        """The first insert fixes the fields; later inserts must match (checked before anything changes).
        Returns the item tensors when they come in the table's field order (so a TensorStorage can skip its
        own walk over the fields), else None."""
        leaves = field_leaves(items)
        signature = tuple((k, v.dtype, v.shape[1:]) for k, v in leaves)
        if signature == self._fields:
            return [v for _, v in leaves]
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
            return None
        expected = {k: (d, s) for k, d, s in self._fields}
        if given != expected:
            raise ValueError(describe_mismatch(expected, given, f"table {self.name!r}'s"))
        return None

    def _direct(self) -> bool:
        """Whether the storage is a plain TensorStorage laid out exactly as the table's fields (so the tensors
        the field check collected can be written as they are). Cached while neither layout changes."""
        if not self._plain_storage:
            return False
        sig, fields = self.storage.signature, self._fields
        seen_sig, seen_fields, same = self._direct_seen
        if sig is seen_sig and fields is seen_fields:
            return same
        same = sig is not None and sig == fields
        self._direct_seen = (sig, fields, same)
        return same

    def _write(self, slots: torch.Tensor, items: TensorDictBase, values: list[torch.Tensor] | None) -> None:
        """storage.write, or for a plain TensorStorage laid out as the table's fields, a write of the tensors
        the field check already collected (saves a second walk over the TensorDict per insert)."""
        if values is not None and self._direct():
            self.storage.write_values(slots, values)
        else:
            self.storage.write(slots, items)

    def _write_one(self, slot: int, item: TensorDictBase, leaves: list[tuple[tuple, torch.Tensor]]) -> None:
        """Write one item given without a batch dimension (``leaves``: its fields, in the table's order)."""
        if self._direct():
            self.storage.write_one(slot, [v for _, v in leaves])
        elif self._write_item is not None:
            self._write_item(slot, item, leaves, self._fields)
        else:
            self.storage.write(torch.tensor([slot], dtype=torch.int64), item.unsqueeze(0))

    def _release(self, slots: list[int]) -> None:
        if self._noop_release:  # TensorStorage.release does nothing: skip building the tensor
            return
        if self._release_list is not None and len(slots) <= 8:
            self._release_list(slots)
        else:
            self.storage.release(torch.tensor(slots, dtype=torch.int64))

    @staticmethod
    def _deadline(timeout: float | None) -> float | None:
        if timeout is None:
            return None
        if timeout < 0:
            raise ValueError(f"timeout must be None or >= 0, got {timeout}")
        return time.monotonic() + timeout

    # -- insert ----------------------------------------------------------------------------------------------
    def insert(
        self, items: TensorDictBase, priority: Any = 1.0, timeout: float | None = None
    ) -> torch.Tensor:
        """Insert a batch of items ([N] = N items, [] = one item), admitted one by one in order by the limiter.

        Returns the N new int64 keys. On timeout, raises ``TimeoutError`` after keeping the items admitted before
        the deadline (the error's ``keys`` and ``num_inserted`` attributes say which).
        """
        if not isinstance(items, TensorDictBase):
            raise TypeError(f"items must be a TensorDict, got {type(items).__name__}")
        if items.batch_dims == 0:
            key = self._insert_one(items, priority, timeout)
            if key is not None:
                return key
            items = items.unsqueeze(0)
        n = int(items.batch_size[0])
        priorities = self._check_priorities(priority, n)
        keys = np.empty(n, dtype=np.int64)
        deadline = self._deadline(timeout)
        done = 0
        with self._cond:
            values = self._check_fields(items)
            while done < n:
                k = self._admissible(n - done)
                if k == 0:
                    if not self._wait(deadline, True):
                        err = TimeoutError(
                            f"table {self.name!r}: insert timed out after {timeout} s; {done} of {n} items were "
                            f"inserted (limiter {self._counts()})"
                        )
                        err.num_inserted = done  # type: ignore[attr-defined]
                        err.keys = torch.from_numpy(keys[:done].copy())  # type: ignore[attr-defined]
                        raise err
                    continue
                self._insert_chunk(items, done, k, priorities, keys, values)
                done += k
                self._notify()
        return torch.from_numpy(keys)

    def _insert_one(self, item: TensorDictBase, priority: Any, timeout: float | None) -> torch.Tensor | None:
        """The insert of one item given without a batch dimension, without adding one (that alone costs more
        than the rest of the insert). Returns None, having changed nothing, when the item's fields differ from the
        table's (or none are known yet), so the general path can report or record them."""
        if type(priority) is float and priority >= 0 and (priority != math.inf or not self._finite_only):
            prio = priority
        else:
            prio = float(self._check_priorities(priority, 1)[0])
        leaves = field_leaves(item)
        signature = tuple([(k, v.dtype, v.shape) for k, v in leaves])
        deadline = self._deadline(timeout)
        with self._cond:
            if signature != self._fields:
                return None
            while self._admissible(1) == 0:
                if not self._wait(deadline, True):
                    err = TimeoutError(
                        f"table {self.name!r}: insert timed out after {timeout} s; 0 of 1 items were "
                        f"inserted (limiter {self._counts()})"
                    )
                    err.num_inserted = 0  # type: ignore[attr-defined]
                    err.keys = torch.zeros(0, dtype=torch.int64)  # type: ignore[attr-defined]
                    raise err
            key = self._next_key
            lim = self._limiter
            if len(self._slot_of) >= self.max_size:
                if type(self.remover) is not Fifo:  # the remover may pick the new item: the general path
                    keys = np.empty(1, dtype=np.int64)
                    self._insert_chunk(item.unsqueeze(0), 0, 1, np.array([prio]), keys)
                    self._notify()
                    return torch.from_numpy(keys)
                victim = self.remover.pop_oldest(1)[0]
                self._remove_item(victim, remover=False)
                lim.deletes += 1
                self._release([victim])
            self._next_key = key + 1
            rec = self._next_recency
            self._next_recency = rec + 1
            slot = self._free.pop()
            self._add_item(slot, key, prio, rec)
            self._write_one(slot, item, leaves)
            lim.inserts += 1
            self._notify()
        return torch.from_numpy(np.array([key], dtype=np.int64))

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

    def _counts(self) -> str:
        lim = self._limiter
        return f"I={lim.inserts} S={lim.samples} D={lim.deletes}, band [{lim.min_diff:g}, {lim.max_diff:g}]"

    def _admissible(self, want: int) -> int:
        """How many of the next ``want`` items the limiter admits now, applying ``can_insert(1)`` item by item
        (each insert raises I; each insert beyond max_size evicts, which raises D)."""
        lim = self._limiter
        if lim.max_diff == math.inf:
            return want
        inserts, deletes, samples = lim.inserts, lim.deletes, lim.samples
        spi, min_size, max_diff, max_size = (
            lim.samples_per_insert,
            lim.min_size_to_sample,
            lim.max_diff,
            self.max_size,
        )
        k = 0
        while k < want:
            if inserts + 1 - deletes > min_size and (inserts + 1) * spi - samples > max_diff:
                break
            inserts += 1
            k += 1
            if inserts - deletes > max_size:
                deletes += 1
        return k

    def _insert_chunk(
        self,
        items: TensorDictBase,
        start: int,
        k: int,
        priorities: np.ndarray,
        keys_out: np.ndarray,
        values: list[torch.Tensor] | None = None,
    ) -> None:
        """Insert items[start : start + k] (already admitted), evicting as the remover picks when full."""
        lim = self._limiter
        prios = priorities[start : start + k]
        first_key, first_rec = self._next_key, self._next_recency
        self._next_key += k
        self._next_recency += k
        keys_out[start : start + k] = np.arange(first_key, first_key + k)
        if start == 0 and k == len(priorities):
            chunk = items
        else:  # a slice of the batch: the collected tensors no longer match it
            chunk, values = items[start : start + k], None
        excess = len(self._slot_of) + k - self.max_size
        if excess > 0 and k <= self.max_size and type(self.remover) is Fifo:
            # A Fifo remover evicts the oldest items, never one of these new ones: evict them all first.
            victims = self.remover.pop_oldest(excess)
            self._remove_items(victims, remover=False)
            lim.deletes += excess
            self._release(victims)
            excess = 0
        if excess <= 0:  # no (more) eviction: one storage write for the chunk
            free = self._free
            if k == 1:
                slot = free.pop()
                self._add_item(slot, first_key, float(prios[0]), first_rec)
                slots = np.array([slot], dtype=np.int64)
            else:
                slot_list = free[-k:][::-1]
                del free[-k:]
                slots = np.array(slot_list, dtype=np.int64)
                recency = np.arange(first_rec, first_rec + k, dtype=np.int64)
                self._key[slots] = np.arange(first_key, first_key + k)
                self._priority[slots] = prios
                self._times[slots] = 0
                self._recency[slots] = recency
                self._slot_of.update(zip(range(first_key, first_key + k), slot_list))
                self.sampler.add(slots, prios, recency)
                self.remover.add(slots, prios, recency)
            self._write(torch.from_numpy(slots), chunk, values)
            lim.inserts += k
            return

        # General path, item by item: the remover may pick any item, including one of the new ones.
        pending: dict[int, int] = {}  # slot -> index in chunk, for new items still present (insertion order)
        released: list[int] = []
        scratch = self._scratch
        for j in range(k):
            key, prio, rec = first_key + j, float(prios[j]), first_rec + j
            lim.inserts += 1
            if self._free:
                slot = self._free.pop()
            else:
                self._set_meta(scratch, key, prio, rec)
                self.remover.add_one(scratch, prio, rec)
                victim, _ = self.remover.select(self._rng)
                self.remover.remove(scratch)
                lim.deletes += 1
                if victim == scratch:  # the new item itself is evicted: never stored
                    continue
                self._remove_item(victim)
                if victim in pending:
                    del pending[victim]
                else:
                    released.append(victim)
                slot = self._free.pop()  # the victim's slot, just freed
            self._add_item(slot, key, prio, rec)
            pending[slot] = j
        if released:
            self._release(released)
        if pending:
            slots = torch.from_numpy(np.array(list(pending), dtype=np.int64))
            index = list(pending.values())
            if len(index) < k:
                chunk = chunk[torch.from_numpy(np.array(index, dtype=np.int64))]
            self.storage.write(slots, chunk)

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

    # -- sample ----------------------------------------------------------------------------------------------
    def sample(self, num_samples: int, timeout: float | None = None) -> TensorDict:
        """Sample ``num_samples`` items (with replacement) once the limiter admits them all.

        Returns a TensorDict [num_samples] with the item fields plus ``key`` (int64), ``priority`` and
        ``probability`` (float64), ``times_sampled`` (int64, this sample included) and ``table_size`` (int64).
        """
        n = int(num_samples)
        if n < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
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
                        f"(size {len(self._slot_of)}, limiter {self._counts()})"
                    )
            batch = self._sample_now(n)
            self._notify()
        return batch

    def _can_supply(self, n: int) -> bool:
        size = len(self._slot_of)
        if not self.max_times_sampled:
            return size > 0
        return size * self.max_times_sampled - self._sum_times >= n

    def _sample_now(self, n: int) -> TensorDict:
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
        data = self.storage.read(torch.from_numpy(slots))
        if exhausted:
            lim.deletes += len(exhausted)
            self._release(exhausted)
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

    # -- priorities, deletes, reset --------------------------------------------------------------------------
    @staticmethod
    def _key_array(keys: Any) -> np.ndarray:
        if isinstance(keys, torch.Tensor):
            keys = keys.detach().cpu().numpy()
        return np.asarray(keys, dtype=np.int64).reshape(-1)

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
        key_list = self._key_array(keys).tolist()
        p = self._check_priorities(priorities, len(key_list))
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
            self.sampler.update(slots, p, recency)
            self.remover.update(slots, p, recency)

    def delete(self, keys: Any) -> int:
        """Delete items by key (unknown keys are ignored); each counts as a limiter delete. Returns how many."""
        with self._cond:
            slots, _ = self._slots_of(self._key_array(keys).tolist())
            slots = np.unique(slots)
            self._remove_items(slots.tolist())
            if len(slots):
                self._limiter.deletes += len(slots)
                self._release(slots.tolist())
                self._cond.notify_all()
            return len(slots)

    def reset(self) -> None:
        """Remove every item and zero the limiter counters (and the blocked-time stats). Keys are never reused."""
        with self._cond:
            self._clear_items()
            self._limiter.reset()
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

    # -- checkpoints -----------------------------------------------------------------------------------------
    def _config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_size": self.max_size,
            "max_times_sampled": self.max_times_sampled,
            "sampler": self.sampler.config(),
            "remover": self.remover.config(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the table: config, items (by slot, in insertion order), priorities,
        times sampled, recency, key and recency counters, limiter counters, and the storage's own state."""
        with self._cond:
            keys = np.fromiter(self._slot_of.keys(), dtype=np.int64, count=len(self._slot_of))
            slots = np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of))
            storage_cls = type(self.storage)
            return {
                "format": _STATE_FORMAT,
                "version": FORMAT_VERSION,
                "config": self._config(),
                "rate_limiter": self._limiter.state(),
                "keys": torch.from_numpy(keys),
                "slots": torch.from_numpy(slots),
                "priorities": torch.from_numpy(self._priority[slots].copy()),
                "times_sampled": torch.from_numpy(self._times[slots].copy()),
                "recency": torch.from_numpy(self._recency[slots].copy()),
                "next_key": self._next_key,
                "next_recency": self._next_recency,
                "fields": [
                    (list(k), str(d).removeprefix("torch."), list(s)) for k, d, s in self._fields or ()
                ],
                "blocked_s": [self._blocked_insert_s, self._blocked_sample_s],
                "storage_class": f"{storage_cls.__module__}:{storage_cls.__qualname__}",
                "storage": self.storage.state_dict(),
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this table's contents and counters by ``state`` (from a table with the same configuration)."""
        if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
            raise ValueError("not a replay Table state (missing or wrong 'format')")
        if state.get("version") != FORMAT_VERSION:
            raise ValueError(
                f"Table state version {state.get('version')} is not supported ({FORMAT_VERSION} is)"
            )
        config = self._config()
        theirs = dict(state["config"])
        if {k: v for k, v in theirs.items() if k != "name"} != {
            k: v for k, v in config.items() if k != "name"
        }:
            raise ValueError(f"Table state has configuration {theirs}, this table has {config}")
        keys = state["keys"].numpy().astype(np.int64)
        slots = state["slots"].numpy().astype(np.int64)
        priorities = state["priorities"].numpy().astype(np.float64)
        times = state["times_sampled"].numpy().astype(np.int64)
        recency = state["recency"].numpy().astype(np.int64)
        if not (len(keys) == len(slots) == len(priorities) == len(times) == len(recency)):
            raise ValueError("Table state arrays have different lengths")
        if len(slots) and (
            slots.min() < 0 or slots.max() >= self.max_size or len(np.unique(slots)) != len(slots)
        ):
            raise ValueError("Table state has invalid slots")
        limiter = RateLimiter.from_state(state["rate_limiter"])
        if _band(limiter) != _band(self._limiter):
            raise ValueError(f"Table state has rate limiter {limiter!r}, this table has {self._limiter!r}")
        fields = tuple((tuple(k), getattr(torch, d), torch.Size(s)) for k, d, s in state.get("fields", []))
        blocked = [float(x) for x in state.get("blocked_s", (0.0, 0.0))]
        with self._cond:
            self._clear_items()
            self.storage.load_state_dict(state["storage"])
            self._key[slots] = keys
            self._priority[slots] = priorities
            self._times[slots] = times
            self._recency[slots] = recency
            self._slot_of = dict(zip(keys.tolist(), slots.tolist()))
            live = set(slots.tolist())
            self._free = [s for s in range(self.max_size - 1, -1, -1) if s not in live]
            self._sum_times = int(times.sum())
            if len(slots):
                self.sampler.add(slots, priorities, recency)
                self.remover.add(slots, priorities, recency)
            self._next_key = int(state["next_key"])
            self._next_recency = int(state["next_recency"])
            self._fields = fields or None
            self._limiter = limiter
            self._blocked_insert_s, self._blocked_sample_s = blocked
            self._cond.notify_all()

    def checkpoint(self, path: str | os.PathLike) -> str:
        """Write the table to ``path`` atomically (temp file, fsync, rename); returns the path."""
        return str(write_checkpoint(path, self.state_dict()))

    @classmethod
    def restore(
        cls,
        path: str | os.PathLike,
        storage: Storage | None = None,
        shared: bool = False,
        seed: int | None = None,
    ) -> Table:
        """Rebuild a table from :meth:`checkpoint`. Missing, partial or corrupt files raise ``ValueError``.

        ``storage``: an empty storage to load into (needed for storage classes outside this package whose
        constructor takes more than ``capacity``; otherwise the recorded class is built with ``capacity``).
        """
        state = read_checkpoint(path)
        try:
            config = state["config"]
            limiter = RateLimiter.from_state(state["rate_limiter"])
            if storage is None:
                storage = _make_storage(state["storage_class"], config["max_size"], state["storage"])
            table = cls(
                config["name"],
                _selectors.from_config(config["sampler"]),
                _selectors.from_config(config["remover"]),
                config["max_size"],
                limiter,
                max_times_sampled=config["max_times_sampled"],
                storage=storage,
                shared=shared,
                seed=seed,
            )
            table.load_state_dict(state)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as err:
            raise ValueError(f"cannot restore replay table from {str(path)!r}: {err}") from err
        return table


def _make_storage(qualified: str, capacity: int, state: dict) -> Storage:
    """Build an empty storage of a recorded class; only classes from this package are imported by name."""
    module_name, _, qualname = qualified.partition(":")
    if not module_name.startswith("lightning_accelrl."):
        raise ValueError(
            f"storage class {qualified!r} is not from lightning_accelrl: pass storage= to restore"
        )
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    if hasattr(obj, "from_state_dict"):
        return obj.from_state_dict(state)
    capacity = max(capacity, int(state.get("capacity", capacity))) if isinstance(state, dict) else capacity
    return obj(capacity)


def _band(limiter: RateLimiter) -> tuple[float, int, float, float]:
    return (limiter.samples_per_insert, limiter.min_size_to_sample, limiter.min_diff, limiter.max_diff)


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
