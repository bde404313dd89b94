"""The body of a Ray table actor: one or more named :class:`Table` objects served from one asyncio event loop.

- A blocked ``insert``/``sample`` waits on its table's ``asyncio.Condition`` (with ``asyncio.wait_for`` for the
  deadline) and the actor keeps serving everyone else, on every table; a timeout is a real ``TimeoutError`` raised
  inside the actor, so nothing is left running after the caller gives up.
- Item data travels as stacked **numpy** arrays, which Ray's object store hands over without a copy; the client
  wraps them with ``torch.from_numpy`` and rebuilds the TensorDict (torch tensors returned by an actor are copied).

:class:`~lightning_accelrl.replay.ray_table.RayTable` decorates :class:`TableActor` with ``ray.remote``; this module
needs no Ray itself.
"""

from __future__ import annotations

import asyncio
import time
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.replay.errors import InsertTimeout
from lightning_accelrl.replay.serving.names import check_table_names, unknown_table
from lightning_accelrl.replay.storage import field_leaves
from lightning_accelrl.replay.table import Table

__all__ = ["Fields", "TableActor", "Timeout", "to_fields", "to_td"]

NestedKey = tuple[str, ...]
Fields = list[tuple[NestedKey, np.ndarray]]


def to_fields(items: TensorDictBase) -> Fields:
    """(nested key, numpy array) pairs: numpy so that Ray ships them through the object store without copies."""
    return [(k, v.detach().cpu().numpy()) for k, v in field_leaves(items)]


def to_td(fields: Fields, n: int) -> TensorDict:
    """A TensorDict [n] over the arrays (no copy; read-only object-store arrays become tensors as they are)."""
    root: dict[str, Any] = {}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        for key, value in fields:
            node = root
            for part in key[:-1]:
                node = node.setdefault(part, {})
            node[key[-1]] = torch.from_numpy(value)
    return TensorDict(root, batch_size=[n])


class Timeout:
    """A timed-out call's answer; the client raises it as ``TimeoutError``, or ``InsertTimeout`` with the keys.
    Returned, not raised: Ray does not carry an exception's attributes (keys, num_inserted)."""

    def __init__(self, message: str, keys: np.ndarray | None = None) -> None:
        self.message, self.keys = message, keys

    def error(self) -> TimeoutError:
        if self.keys is None:
            return TimeoutError(self.message)
        return InsertTimeout(self.message, torch.from_numpy(np.array(self.keys, dtype=np.int64)))


class _Served:
    """One table of the actor, its condition (created inside the event loop) and its blocked-call counters."""

    def __init__(self, table: Table) -> None:
        self.table = table
        self.cond: asyncio.Condition | None = None
        self.blocked_s = {"insert": 0.0, "sample": 0.0}
        self.waiting = {"insert": 0, "sample": 0}

    def condition(self) -> asyncio.Condition:
        if self.cond is None:
            self.cond = asyncio.Condition()
        return self.cond

    async def changed(self) -> None:
        cond = self.condition()
        async with cond:
            cond.notify_all()

    async def wait(self, op: str, deadline: float | None) -> bool:
        """Wait for a change of state or the deadline (the condition's lock is held); False once it has passed."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        start = time.monotonic()
        self.waiting[op] += 1
        try:
            await asyncio.wait_for(self.condition().wait(), remaining)
        except asyncio.TimeoutError:
            pass
        finally:
            self.waiting[op] -= 1
            self.blocked_s[op] += time.monotonic() - start
        return True

    def info(self) -> dict[str, Any]:
        info = self.table.info()
        info["insert_blocked_s"] += self.blocked_s["insert"]
        info["sample_blocked_s"] += self.blocked_s["sample"]
        info["waiting_inserts"] += self.waiting["insert"]
        info["waiting_samples"] += self.waiting["sample"]
        return info


class TableActor:
    """The actor body (decorated with ``ray.remote`` at creation). One event loop: table calls never overlap.
    Every call names its table; the first table given is the default."""

    def __init__(self, factories: list[Callable[[], Table]], num_threads: int = 1) -> None:
        torch.set_num_threads(num_threads)
        tables = [factory() for factory in factories]
        for table in tables:
            if not isinstance(table, Table):
                raise TypeError(f"the table factory returned {type(table).__name__}, not a Table")
        check_table_names(t.name for t in tables)
        self.tables = {t.name: _Served(t) for t in tables}

    def _served(self, name: str) -> _Served:
        served = self.tables.get(name)
        if served is None:
            raise unknown_table(name, list(self.tables))
        return served

    async def insert(
        self, table: str, fields: Fields, n: int, priority: Any, timeout: float | None
    ) -> np.ndarray | Timeout:
        served = self._served(table)
        t = served.table
        items = to_td(fields, n)
        deadline = None if timeout is None else time.monotonic() + timeout
        done, keys = 0, []
        cond = served.condition()
        async with cond:
            while True:
                prio = priority if priority is None or np.isscalar(priority) else priority[done:]
                try:
                    keys.append(t.insert(items[done:] if done else items, prio, timeout=0).numpy())
                    done = n
                except InsertTimeout as err:
                    k = err.num_inserted
                    if k:
                        keys.append(err.keys.numpy())
                        done += k
                        cond.notify_all()
                if done == n:
                    cond.notify_all()
                    return np.concatenate(keys) if keys else np.empty(0, np.int64)
                if not await served.wait("insert", deadline):
                    return Timeout(
                        f"table {t.name!r}: insert timed out after {timeout} s; {done} of {n} items were "
                        f"inserted (limiter {t.rate_limiter.counts()})",
                        np.concatenate(keys) if keys else np.empty(0, np.int64),
                    )

    async def sample(self, table: str, n: int, timeout: float | None) -> tuple[Fields, int] | Timeout:
        served = self._served(table)
        t = served.table
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = served.condition()
        async with cond:
            while True:
                try:
                    batch = t.sample(n, timeout=0)
                except TimeoutError:
                    if not await served.wait("sample", deadline):
                        return Timeout(
                            f"table {t.name!r}: sample({n}) timed out after {timeout} s; nothing was sampled "
                            f"(size {t.size}, limiter {t.rate_limiter.counts()})"
                        )
                    continue
                cond.notify_all()
                return to_fields(batch), n

    async def update_priorities(self, table: str, keys: np.ndarray, priorities: Any) -> None:
        self._served(table).table.update_priorities(keys, priorities)

    async def delete(self, table: str, keys: np.ndarray) -> int:
        served = self._served(table)
        deleted = served.table.delete(keys)
        if deleted:
            await served.changed()
        return deleted

    async def reset(self, table: str) -> None:
        served = self._served(table)
        served.table.reset()
        served.blocked_s = {"insert": 0.0, "sample": 0.0}
        await served.changed()

    async def size(self, table: str) -> int:
        return self._served(table).table.size

    async def info(self, table: str) -> dict[str, Any]:
        return self._served(table).info()

    async def checkpoint(self, table: str, path: str) -> str:
        return self._served(table).table.checkpoint(path)

    async def state_dict(self, table: str) -> dict[str, Any]:
        return self._served(table).table.state_dict()  # no await inside: a consistent snapshot

    async def server_info(self) -> dict[str, dict[str, Any]]:
        return {name: served.info() for name, served in self.tables.items()}

    async def server_state_dict(self) -> dict[str, dict[str, Any]]:
        """Every table's state, by name, between two calls (no await inside)."""
        return {name: served.table.state_dict() for name, served in self.tables.items()}

    async def load_server_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        if not isinstance(states, dict) or sorted(states) != sorted(self.tables):
            names = sorted(states) if isinstance(states, dict) else type(states).__name__
            raise ConfigError(
                f"the state holds tables {names}, this actor has {list(self.tables)}: "
                "load a state saved from an actor with the same tables"
            )
        for name, served in self.tables.items():  # each table checks its state before it changes anything
            served.table.load_state_dict(states[name])
            served.blocked_s = {"insert": 0.0, "sample": 0.0}
        for served in self.tables.values():
            await served.changed()

    async def describe(self) -> list[tuple[str, int]]:
        """(name, max_size) of every table, in order."""
        return [(name, served.table.max_size) for name, served in self.tables.items()]
