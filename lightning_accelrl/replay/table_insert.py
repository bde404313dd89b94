"""Inserting into a replay :class:`~lightning_accelrl.replay.Table` (a part of it, by job): admit items one by one
as the rate limiter allows, evict as the remover picks when full, and hand the data to the storage."""

from __future__ import annotations

import math
import threading
from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase

from lightning_accelrl.replay.errors import InsertTimeout
from lightning_accelrl.replay.rate_limiters import RateLimiter
from lightning_accelrl.replay.selectors import Selector
from lightning_accelrl.replay.storage import Leaves, Storage, field_leaves
from lightning_accelrl.replay.validation import check_priorities

__all__ = ["TableInserts"]


class TableInserts:
    """The insert methods of :class:`~lightning_accelrl.replay.Table` (they use its lock, field check, waits and
    item bookkeeping)."""

    name: str
    max_size: int
    sampler: Selector
    remover: Selector
    storage: Storage
    _cond: threading.Condition
    _limiter: RateLimiter
    _rng: np.random.Generator
    _max_priority: float
    _top_priority: float
    _fields: tuple | None
    _slot_of: dict[int, int]
    _free: list[int]
    _key: np.ndarray
    _priority: np.ndarray
    _times: np.ndarray
    _recency: np.ndarray
    _next_key: int
    _next_recency: int
    _scratch: int

    def insert(
        self, items: TensorDictBase, priority: Any = None, timeout: float | None = None
    ) -> torch.Tensor:
        """Insert a batch of items ([N] = N items, [] = one item), admitted one by one in order by the limiter.

        ``priority``: one number for every item or one per item; ``None`` gives each item the largest priority any
        item of this table has been given so far (1.0 before any), as prioritized experience replay inserts new
        transitions.

        Returns the N new int64 keys. On timeout, raises ``TimeoutError`` after keeping the items admitted before
        the deadline (the :class:`InsertTimeout`'s ``keys`` and ``num_inserted`` say which).
        """
        if not isinstance(items, TensorDictBase):
            raise TypeError(f"items must be a TensorDict, got {type(items).__name__}")
        deadline = self._deadline(timeout)
        if items.batch_dims == 0:
            key = self._insert_one(items, priority, deadline, timeout)
            if key is not None:
                return key
            items = items.unsqueeze(0)
        n = int(items.batch_size[0])
        given = None if priority is None else check_priorities(priority, n, self._max_priority)
        keys = np.empty(n, dtype=np.int64)
        done = 0
        with self._cond:
            leaves = self._check_fields(items)
            priorities = self._new_priorities(given, n)
            while done < n:
                k = self._admit(n - done, deadline, timeout, keys[:done], n)
                self._insert_chunk(items, done, k, priorities, keys, leaves)
                done += k
                self._notify()
        return torch.from_numpy(keys)

    def _admit(
        self, want: int, deadline: float | None, timeout: float | None, done: np.ndarray, n: int
    ) -> int:
        """How many of the next ``want`` items the limiter admits, waiting (lock held) until at least one is; a
        TimeoutError at the deadline, carrying the ``done`` keys of the ``n`` items the caller was inserting."""
        while (k := self._admissible(want)) == 0:
            if not self._wait(deadline, True):
                raise InsertTimeout(
                    f"table {self.name!r}: insert timed out after {timeout} s; {len(done)} of {n} items were "
                    f"inserted (limiter {self._limiter.counts()})",
                    torch.from_numpy(done.copy()),
                )
        return k

    def _insert_one(
        self, item: TensorDictBase, priority: Any, deadline: float | None, timeout: float | None
    ) -> torch.Tensor | None:
        """The insert of one item given without a batch dimension, without adding one (that alone costs more
        than the rest of the insert). Returns None, having changed nothing, when the item's fields differ from the
        table's (or none are known yet), so the general path can report or record them."""
        if priority is None or (type(priority) is float and 0 <= priority <= self._max_priority):
            prio = priority
        else:
            prio = float(check_priorities(priority, 1, self._max_priority)[0])
        leaves = field_leaves(item)
        signature = tuple([(k, v.dtype, v.shape) for k, v in leaves])
        with self._cond:
            if signature != self._fields:
                return None
            self._admit(1, deadline, timeout, np.empty(0, np.int64), 1)
            if prio is None:
                prio = self._top_priority
            elif prio > self._top_priority:
                self._top_priority = prio
            key = self._next_key
            if len(self._slot_of) >= self.max_size:
                if not self.remover.evicts_oldest:  # the remover may pick the new item: the general path
                    keys = np.empty(1, dtype=np.int64)
                    self._insert_chunk(item.unsqueeze(0), 0, 1, np.array([prio]), keys)
                    self._notify()
                    return torch.from_numpy(keys)
                victim = self.remover.pop_oldest(1)[0]
                self._remove_item(victim, remover=False)
                self._limiter.deletes += 1
                self.storage.release([victim])
            self._next_key = key + 1
            rec = self._next_recency
            self._next_recency = rec + 1
            slot = self._free.pop()
            self._add_item(slot, key, prio, rec)
            self.storage.write_item(slot, item, leaves, self._fields)
            self._limiter.inserts += 1
            self._notify()
        return torch.from_numpy(np.array([key], dtype=np.int64))

    def _new_priorities(self, given: np.ndarray | None, n: int) -> np.ndarray:
        """The priorities of ``n`` new items (lock held): the given ones, raising the running largest priority,
        or that largest priority for each."""
        if given is None:
            return np.full(n, self._top_priority)
        self._top_priority = max(self._top_priority, float(given.max()))
        return given

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
        leaves: Leaves | None = None,
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
            chunk = items[start : start + k]
            leaves = None if leaves is None else [(key, v[start : start + k]) for key, v in leaves]
        excess = len(self._slot_of) + k - self.max_size
        if excess > 0 and k <= self.max_size and self.remover.evicts_oldest:
            # A Fifo remover evicts the oldest items, never one of these new ones: evict them all first.
            victims = self.remover.pop_oldest(excess)
            self._remove_items(victims, remover=False)
            lim.deletes += excess
            self.storage.release(victims)
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
            self.storage.write(torch.from_numpy(slots), chunk, leaves, self._fields)
            lim.inserts += k
            return

        self._insert_evicting(chunk, k, first_key, first_rec, prios)

    def _insert_evicting(
        self, chunk: TensorDictBase, k: int, first_key: int, first_rec: int, prios: np.ndarray
    ) -> None:
        """Insert a full table's chunk item by item: the remover may pick any item, including a new one."""
        lim = self._limiter
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
            self.storage.release(released)
        if pending:
            slots = torch.from_numpy(np.array(list(pending), dtype=np.int64))
            index = list(pending.values())
            if len(index) < k:
                chunk = chunk[torch.from_numpy(np.array(index, dtype=np.int64))]
            self.storage.write(slots, chunk)
