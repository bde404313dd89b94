"""Selectors: which item a table samples (as ``sampler``) or evicts (as ``remover``), as in Reverb.

| selector | picks | probability reported |
|---|---|---|
| Uniform | any item, uniformly | 1 / size |
| Prioritized(α) | item i with weight p_i^α (0^α = 0); all zero -> uniform | w_i / Σw (or 1 / size) |
| Fifo / Lifo | the oldest / newest item | 1.0 |
| MaxHeap / MinHeap | highest / lowest priority; ties -> least recently inserted or updated | 1.0 |

A selector object is a configuration. The table calls :meth:`Selector.bind` to get its own working copy sized for
its slots, so one selector object may serve as sampler and remover, or in several tables. Items are identified by
their storage slot; ``recency`` is the table's counter of inserts and priority updates (heaps break ties with it).
"""

from __future__ import annotations

import heapq
import itertools
import math
import sys
from collections import OrderedDict
from typing import Any

import numpy as np

from lightning_accelrl.replay.sumtree import SumTree

__all__ = ["Fifo", "Lifo", "MaxHeap", "MinHeap", "Prioritized", "Selector", "Uniform", "from_config"]


class Selector:
    """Base class. Bound copies implement add/remove/update/select/sample over slot ids."""

    #: Whether ``select`` always returns the same item until the set changes (Fifo, Lifo, heaps).
    deterministic = True
    #: Whether it always evicts the oldest items, so it has ``pop_oldest`` (Fifo): a table then evicts before
    #: inserting.
    evicts_oldest = False
    #: The largest priority it accepts (a sum tree needs p ** exponent, and the sum of them, finite).
    max_priority = math.inf

    def config(self) -> dict[str, Any]:
        """Constructor arguments plus the type name, enough to rebuild the selector."""
        return {"type": type(self).__name__}

    def bind(self, capacity: int) -> Selector:
        """A fresh working copy able to hold slots ``0 .. capacity - 1``."""
        bound = from_config(self.config())
        bound._allocate(capacity)
        return bound

    def _allocate(self, capacity: int) -> None:
        raise NotImplementedError

    # The interface of bound copies. Slots are int64 arrays; priorities float64; recency int64.
    def add(self, slots: np.ndarray, priorities: np.ndarray, recency: np.ndarray) -> None:
        """Add new items, in insertion order."""
        raise NotImplementedError

    def add_one(self, slot: int, priority: float, recency: int) -> None:
        """Add one new item (the scalar fast path of :meth:`add`)."""
        self.add(np.array([slot]), np.array([priority]), np.array([recency]))

    def remove(self, slot: int) -> None:
        """Remove one present item."""
        raise NotImplementedError

    def remove_many(self, slots: np.ndarray) -> None:
        """Remove several present items (distinct slots, int64)."""
        for slot in slots.tolist():
            self.remove(slot)

    def draw_order(self) -> np.ndarray | None:
        """The present slots in the order whose :meth:`add` rebuilds this copy's random draws exactly (a
        checkpoint saves items in it), or None when draws do not depend on the order items were added in."""
        return None

    def update(self, slots: np.ndarray, priorities: np.ndarray, recency: np.ndarray) -> None:
        """New priorities for present items (unique slots)."""

    def select(self, rng: np.random.Generator) -> tuple[int, float]:
        """One pick from a non-empty set: (slot, probability)."""
        raise NotImplementedError

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """``n`` independent picks with replacement and no change of state: (slots, probabilities)."""
        slot, prob = self.select(rng)
        return np.full(n, slot, dtype=np.int64), np.full(n, prob, dtype=np.float64)

    def clear(self) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "type")
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Selector) and self.config() == other.config()

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.config().items())))


class _Members:
    """A dense array of the present slots with O(1) add, remove (swap with last) and uniform draws."""

    def __init__(self, capacity: int) -> None:
        self.items = np.zeros(capacity, dtype=np.int64)
        self.pos = np.full(capacity, -1, dtype=np.int64)
        self.n = 0

    def add(self, slots: np.ndarray) -> None:
        n, k = self.n, len(slots)
        if k == 1:
            slot = int(slots[0])
            self.items[n] = slot
            self.pos[slot] = n
        else:
            self.items[n : n + k] = slots
            self.pos[slots] = np.arange(n, n + k)
        self.n = n + k

    def add_one(self, slot: int) -> None:
        self.items[self.n] = slot
        self.pos[slot] = self.n
        self.n += 1

    def remove(self, slot: int) -> None:
        items, pos = self.items, self.pos
        p = pos.item(slot)
        self.n = n = self.n - 1
        last = items.item(n)
        items[p] = last
        pos[last] = p
        pos[slot] = -1

    def remove_many(self, slots: np.ndarray) -> None:
        """Remove distinct present slots at once: the surviving members of the tail fill the holes the removed
        ones leave in front of the new end."""
        k = len(slots)
        if k < 8:
            for slot in slots.tolist():
                self.remove(slot)
            return
        items, pos = self.items, self.pos
        end = self.n - k
        where = pos[slots]
        pos[slots] = -1
        holes = where[where < end]
        if len(holes):
            tail = items[end : self.n]
            movers = tail[pos[tail] >= 0]
            items[holes] = movers
            pos[movers] = holes
        self.n = end

    def draw(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return self.items[rng.integers(0, self.n, size=n)]

    def clear(self) -> None:
        self.pos[self.items[: self.n]] = -1
        self.n = 0


class Uniform(Selector):
    """Every item equally likely; reports probability 1 / size."""

    deterministic = False

    def _allocate(self, capacity: int) -> None:
        self._members = _Members(capacity)

    def add(self, slots: np.ndarray, priorities: np.ndarray, recency: np.ndarray) -> None:
        self._members.add(slots)

    def add_one(self, slot: int, priority: float, recency: int) -> None:
        self._members.add_one(slot)

    def remove(self, slot: int) -> None:
        self._members.remove(slot)

    def remove_many(self, slots: np.ndarray) -> None:
        self._members.remove_many(slots)

    def draw_order(self) -> np.ndarray:
        """Uniform draws index a dense array of members that removals reorder."""
        return self._members.items[: self._members.n].copy()

    def select(self, rng: np.random.Generator) -> tuple[int, float]:
        m = self._members
        return int(m.items[rng.integers(m.n)]), 1.0 / m.n

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        m = self._members
        return m.draw(n, rng), np.full(n, 1.0 / m.n)

    def clear(self) -> None:
        self._members.clear()


class Prioritized(Selector):
    """Item i with probability p_i^α / Σ p_j^α, by a sum tree; zero priority is never picked (0^α = 0, even
    for α = 0) while any priority is positive; if all are zero, uniformly with probability 1 / size."""

    deterministic = False

    def __init__(self, priority_exponent: float) -> None:
        if not priority_exponent >= 0:
            raise ValueError(f"priority_exponent must be >= 0, got {priority_exponent}")
        self.priority_exponent = float(priority_exponent)

    def config(self) -> dict[str, Any]:
        return {"type": "Prioritized", "priority_exponent": self.priority_exponent}

    def _allocate(self, capacity: int) -> None:
        self._tree = SumTree(capacity)
        self._members = _Members(capacity)
        # p ** exponent <= float max / capacity keeps every weight and the sum of all of them finite
        log_max = math.log(sys.float_info.max)
        bound = (
            (log_max - math.log(capacity)) / self.priority_exponent if self.priority_exponent > 0 else log_max
        )
        self.max_priority = math.exp(bound) if bound < log_max else sys.float_info.max

    def _weights(self, priorities: np.ndarray) -> np.ndarray:
        p = np.asarray(priorities, dtype=np.float64)
        positive = p > 0
        return np.where(
            positive, np.power(p, self.priority_exponent, where=positive, out=np.zeros_like(p)), 0.0
        )

    def draw_order(self) -> np.ndarray:
        """With every weight zero, draws are uniform over the members' dense array (see :class:`Uniform`)."""
        return self._members.items[: self._members.n].copy()

    def add(self, slots: np.ndarray, priorities: np.ndarray, recency: np.ndarray) -> None:
        self._members.add(slots)
        self._tree.set(slots, self._weights(priorities))

    def add_one(self, slot: int, priority: float, recency: int) -> None:
        self._members.add_one(slot)
        self._tree.set_one(slot, priority**self.priority_exponent if priority > 0 else 0.0)

    def remove(self, slot: int) -> None:
        self._members.remove(slot)
        self._tree.set_one(slot, 0.0)

    def remove_many(self, slots: np.ndarray) -> None:
        self._members.remove_many(slots)
        self._tree.set(slots, np.zeros(len(slots)))

    def update(self, slots: np.ndarray, priorities: np.ndarray, recency: np.ndarray) -> None:
        self._tree.set(slots, self._weights(priorities))

    def select(self, rng: np.random.Generator) -> tuple[int, float]:
        total = self._tree.total
        if total <= 0.0:
            m = self._members
            return int(m.items[rng.integers(m.n)]), 1.0 / m.n
        slot = self._tree.find_one(rng.random() * total)
        return slot, float(self._tree.nodes[self._tree.offset + slot]) / total

    def sample(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        total = self._tree.total
        if total <= 0.0:
            return self._members.draw(n, rng), np.full(n, 1.0 / self._members.n)
        slots = self._tree.find(rng.random(n) * total)
        return slots, self._tree.get(slots) / total

    def probabilities(self, slots: np.ndarray) -> np.ndarray:
        """The probability each given present slot would be picked with now (for tests and diagnostics)."""
        total = self._tree.total
        if total <= 0.0:
            return np.full(len(slots), 1.0 / self._members.n)
        return self._tree.get(np.asarray(slots, dtype=np.int64)) / total

    def clear(self) -> None:
        self._tree.clear()
        self._members.clear()


class Fifo(Selector):
    """The oldest item (first inserted); priority updates do not reorder."""

    _last = False
    evicts_oldest = True

    def _allocate(self, capacity: int) -> None:
        self._order: OrderedDict[int, None] = OrderedDict()

    def add(self, slots: np.ndarray, priorities: np.ndarray, recency: np.ndarray) -> None:
        order = self._order
        for slot in slots.tolist():
            order[slot] = None

    def add_one(self, slot: int, priority: float, recency: int) -> None:
        self._order[slot] = None

    def oldest(self, n: int) -> list[int]:
        """The ``n`` oldest items, oldest first (the table evicts them in one go when a Fifo remover is full)."""
        return list(itertools.islice(iter(self._order), n))

    def pop_oldest(self, n: int) -> list[int]:
        """Remove and return the ``n`` oldest items, oldest first."""
        pop = self._order.popitem
        return [pop(last=False)[0] for _ in range(n)]

    def remove(self, slot: int) -> None:
        del self._order[slot]

    def remove_many(self, slots: np.ndarray) -> None:
        order = self._order
        for slot in slots.tolist():
            del order[slot]

    def select(self, rng: np.random.Generator) -> tuple[int, float]:
        order = self._order
        return (next(reversed(order)) if self._last else next(iter(order))), 1.0

    def clear(self) -> None:
        self._order.clear()


class Lifo(Fifo):
    """The newest item (last inserted)."""

    _last = True
    evicts_oldest = False


class _Heap(Selector):
    """Binary heap on (priority key, recency) with lazy invalidation: an entry is live while its recency is the
    slot's current one. Stale entries are dropped at the top, and the heap is rebuilt when they dominate."""

    _sign = 1.0

    def _allocate(self, capacity: int) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._recency: list[int] = [-1] * capacity
        self._size = 0

    def _push(self, slots: np.ndarray, priorities: np.ndarray, recency: np.ndarray) -> None:
        heap, current, sign = self._heap, self._recency, self._sign
        for slot, prio, rec in zip(slots.tolist(), priorities.tolist(), recency.tolist()):
            current[slot] = rec
            heapq.heappush(heap, (sign * prio, rec, slot))
        if len(heap) > 2 * self._size + 64:
            self._compact()

    def add(self, slots: np.ndarray, priorities: np.ndarray, recency: np.ndarray) -> None:
        self._size += len(slots)
        self._push(slots, priorities, recency)

    def add_one(self, slot: int, priority: float, recency: int) -> None:
        self._size += 1
        self._recency[slot] = recency
        heapq.heappush(self._heap, (self._sign * priority, recency, slot))
        if len(self._heap) > 2 * self._size + 64:
            self._compact()

    def update(self, slots: np.ndarray, priorities: np.ndarray, recency: np.ndarray) -> None:
        self._push(slots, priorities, recency)

    def _compact(self) -> None:
        current = self._recency
        self._heap = [e for e in self._heap if current[e[2]] == e[1]]
        heapq.heapify(self._heap)

    def remove(self, slot: int) -> None:
        self._recency[slot] = -1
        self._size -= 1

    def remove_many(self, slots: np.ndarray) -> None:
        current = self._recency
        for slot in slots.tolist():
            current[slot] = -1
        self._size -= len(slots)

    def select(self, rng: np.random.Generator) -> tuple[int, float]:
        heap, current = self._heap, self._recency
        while True:
            _, rec, slot = heap[0]
            if current[slot] == rec:
                return slot, 1.0
            heapq.heappop(heap)

    def clear(self) -> None:
        self._heap.clear()
        self._recency = [-1] * len(self._recency)
        self._size = 0


class MaxHeap(_Heap):
    """The highest priority; ties go to the item least recently inserted or updated."""

    _sign = -1.0


class MinHeap(_Heap):
    """The lowest priority; ties go to the item least recently inserted or updated."""

    _sign = 1.0


_SELECTORS: dict[str, type[Selector]] = {
    cls.__name__: cls for cls in (Uniform, Prioritized, Fifo, Lifo, MaxHeap, MinHeap)
}


def from_config(config: dict[str, Any]) -> Selector:
    """Rebuild an (unbound) selector from :meth:`Selector.config`."""
    kwargs = dict(config)
    kind = kwargs.pop("type")
    if kind not in _SELECTORS:
        raise ValueError(f"unknown selector type {kind!r}; known: {sorted(_SELECTORS)}")
    return _SELECTORS[kind](**kwargs)
