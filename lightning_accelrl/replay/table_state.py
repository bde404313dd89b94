"""A replay table's state: :meth:`~TableState.state_dict` and its inverses, and checkpoint files.

The state is plain data (tensors, numbers, strings, lists, dicts) and loads with ``torch.load(weights_only=True)``.
It holds the items, their priorities and counters, the limiter's counters, the storage's own state and the
sampling generator's state, so a restored table draws the same samples as the one that was saved. A storage
class is named in the state and resolved only among this package's storages.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from lightning_accelrl.replay import selectors as _selectors
from lightning_accelrl.replay.checkpoint import FORMAT_VERSION, read_checkpoint, write_checkpoint
from lightning_accelrl.replay.frames import FrameStackStorage
from lightning_accelrl.replay.rate_limiters import RateLimiter
from lightning_accelrl.replay.selectors import Selector
from lightning_accelrl.replay.storage import DTYPES, Storage, TensorStorage

if TYPE_CHECKING:
    from lightning_accelrl.replay.table import Table

__all__ = ["STATE_FORMAT", "TableState"]

STATE_FORMAT = "lightning_accelrl.replay.Table"


class TableState:
    """The state and checkpoint methods of :class:`~lightning_accelrl.replay.Table` (a part of it, by job)."""

    name: str
    max_size: int
    max_times_sampled: int
    sampler: Selector
    remover: Selector
    storage: Storage
    _cond: threading.Condition
    _rng: np.random.Generator
    _max_priority: float
    _top_priority: float

    def _config(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "max_size": self.max_size,
            "max_times_sampled": self.max_times_sampled,
            "sampler": self.sampler.config(),
            "remover": self.remover.config(),
        }

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to rebuild the table: config, items (by slot, in the sampler's draw order, else in
        insertion order), priorities, times sampled, recency, key and recency counters, limiter counters, and the
        storage's own state. A restored table draws the samples the saved one would have drawn."""
        with self._cond:
            keys = np.fromiter(self._slot_of.keys(), dtype=np.int64, count=len(self._slot_of))
            slots = np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of))
            order = self.sampler.draw_order()
            if order is not None:  # reorder (key, slot) pairs so that re-adding them rebuilds the draws
                keys = self._key[order].copy()
                slots = order
            storage_cls = type(self.storage)
            return {
                "format": STATE_FORMAT,
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
                "top_priority": self._top_priority,
                "fields": [
                    (list(k), str(d).removeprefix("torch."), list(s)) for k, d, s in self._fields or ()
                ],
                "blocked_s": [self._blocked_insert_s, self._blocked_sample_s],
                "storage_class": f"{storage_cls.__module__}:{storage_cls.__qualname__}",
                "storage": self.storage.state_dict(),
                "rng": _rng_state(self._rng),
            }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace this table's contents and counters by ``state`` (from a table with the same configuration)."""
        if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
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
        fields = tuple((tuple(k), _dtype(d), torch.Size(s)) for k, d, s in state.get("fields", []))
        blocked = [float(x) for x in state.get("blocked_s", (0.0, 0.0))]
        # States saved before the running largest priority was kept: the largest the items hold (at least 1.0).
        top = float(state.get("top_priority", max(1.0, float(priorities.max(initial=0.0)))))
        if not 0 <= top <= self._max_priority:
            raise ValueError(f"Table state has top_priority {top}, outside [0, {self._max_priority:.6g}]")
        with self._cond:
            self._clear_items()
            self.storage.load_state_dict(state["storage"])
            self._key[slots] = keys
            self._priority[slots] = priorities
            self._times[slots] = times
            self._recency[slots] = recency
            by_key = np.argsort(keys, kind="stable")  # insertion order (keys grow with inserts)
            self._slot_of = dict(zip(keys[by_key].tolist(), slots[by_key].tolist()))
            live = set(slots.tolist())
            self._free = [s for s in range(self.max_size - 1, -1, -1) if s not in live]
            self._sum_times = int(times.sum())
            if len(slots):  # the sampler in the saved (draw) order, the remover in insertion order (Fifo)
                self.sampler.add(slots, priorities, recency)
                self.remover.add(slots[by_key], priorities[by_key], recency[by_key])
            self._next_key = int(state["next_key"])
            self._next_recency = int(state["next_recency"])
            self._top_priority = top
            self._fields = fields or None
            self._limiter = limiter
            self._blocked_insert_s, self._blocked_sample_s = blocked
            if state.get("rng") is not None:
                self._rng = _rng_from_state(state["rng"])
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

        ``storage``: an empty storage to load into (needed for storage classes other than this package's
        :class:`TensorStorage` and :class:`FrameStackStorage`). ``seed`` replaces the recorded random state.
        """
        state = read_checkpoint(path)
        try:
            return cls.from_state(state, storage, shared, seed)
        except ValueError as err:
            raise ValueError(f"cannot restore replay table from {str(path)!r}: {err}") from err

    @classmethod
    def from_state(
        cls,
        state: dict[str, Any],
        storage: Storage | None = None,
        shared: bool = False,
        seed: int | None = None,
    ) -> Table:
        """A new table built from a :meth:`state_dict` (see :meth:`restore`)."""
        try:
            config = state["config"]
            if storage is None:
                storage = _make_storage(state["storage_class"], config["max_size"], state["storage"])
            table = cls(
                config["name"],
                _selectors.from_config(config["sampler"]),
                _selectors.from_config(config["remover"]),
                config["max_size"],
                RateLimiter.from_state(state["rate_limiter"]),
                max_times_sampled=config["max_times_sampled"],
                storage=storage,
                shared=shared,
            )
            if seed is not None:
                state = {**state, "rng": None}
                table._rng = np.random.default_rng(seed)
            table.load_state_dict(state)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as err:
            raise ValueError(f"not a usable replay table state: {type(err).__name__}: {err}") from err
        return table


def _make_storage(qualified: Any, capacity: int, state: Any) -> Storage:
    """An empty storage of a recorded class, which must be one of this package's (never imported by name)."""
    build = _STORAGES.get(qualified) if isinstance(qualified, str) else None
    if build is None:
        known = ", ".join(sorted(_STORAGES))
        raise ValueError(f"storage class {qualified!r} is not one of {known}: pass storage= to restore")
    return build(capacity, state)


def _tensor_storage(capacity: int, state: Any) -> Storage:
    recorded = int(state.get("capacity", capacity)) if isinstance(state, dict) else capacity
    return TensorStorage(max(capacity, recorded))


_STORAGES: dict[str, Callable[[int, Any], Storage]] = {
    f"{TensorStorage.__module__}:{TensorStorage.__qualname__}": _tensor_storage,
    f"{FrameStackStorage.__module__}:{FrameStackStorage.__qualname__}": (
        lambda capacity, state: FrameStackStorage.from_state_dict(state)
    ),
}


def _dtype(name: Any) -> torch.dtype:
    dtype = DTYPES.get(name) if isinstance(name, str) else None
    if dtype is None:
        raise ValueError(f"unknown dtype {name!r} in a table state")
    return dtype


def _rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The sampling generator's state as plain values (its 128-bit integers as decimal strings)."""
    state = rng.bit_generator.state
    return {
        "bit_generator": state["bit_generator"],
        "state": str(state["state"]["state"]),
        "inc": str(state["state"]["inc"]),
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }


def _rng_from_state(state: dict[str, Any]) -> np.random.Generator:
    if state.get("bit_generator") != "PCG64":
        raise ValueError(f"unknown random generator {state.get('bit_generator')!r} in a table state")
    bit_generator = np.random.PCG64()
    bit_generator.state = {
        "bit_generator": "PCG64",
        "state": {"state": int(state["state"]), "inc": int(state["inc"])},
        "has_uint32": int(state["has_uint32"]),
        "uinteger": int(state["uinteger"]),
    }
    return np.random.Generator(bit_generator)


def _band(limiter: RateLimiter) -> tuple[float, int, float, float]:
    return (limiter.samples_per_insert, limiter.min_size_to_sample, limiter.min_diff, limiter.max_diff)
