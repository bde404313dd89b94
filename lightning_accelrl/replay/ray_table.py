"""Serve a replay :class:`Table` beyond one machine: a Ray async actor owns the table; clients anywhere in the
Ray cluster call it through :class:`RayTableClient` (the Table API). Needs the ``ray`` extra.

- The actor's methods are ``async def``: a blocked ``insert``/``sample`` waits on an ``asyncio.Condition`` (with
  ``asyncio.wait_for`` for the deadline) and the actor keeps serving everyone else; a timeout is a real
  ``TimeoutError`` raised inside the actor, so nothing is left running after the caller gives up.
- Item data travels as stacked **numpy** arrays, which Ray's object store hands over without a copy; the client
  wraps them with ``torch.from_numpy`` and rebuilds the TensorDict (torch tensors returned by an actor are copied).
- Bind Ray to loopback unless you mean to serve other machines:
  :func:`~lightning_accelrl.replay.ray_local.start_local_ray` starts a single-node Ray on 127.0.0.1.
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

from lightning_accelrl.replay.errors import InsertTimeout
from lightning_accelrl.replay.rate_limiters import Queue, RateLimiter, Stack
from lightning_accelrl.replay.selectors import Fifo, Lifo, Selector
from lightning_accelrl.replay.storage import field_leaves
from lightning_accelrl.replay.table import Table
from lightning_accelrl.replay.validation import as_keys, check_count, check_timeout

try:
    import ray
    from ray.exceptions import RayActorError, RayTaskError
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "lightning_accelrl.replay.ray_table needs Ray: pip install 'lightning-accelrl[ray]'"
    ) from err

__all__ = ["RayTable", "RayTableClient"]

NestedKey = tuple[str, ...]
Fields = list[tuple[NestedKey, np.ndarray]]


def _to_fields(items: TensorDictBase) -> Fields:
    """(nested key, numpy array) pairs: numpy so that Ray ships them through the object store without copies."""
    return [(k, v.detach().cpu().numpy()) for k, v in field_leaves(items)]


def _to_td(fields: Fields, n: int) -> TensorDict:
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


class _TableActor:
    """The actor body (decorated with ``ray.remote`` at creation). One event loop: table calls never overlap."""

    def __init__(self, factory: Callable[[], Table], num_threads: int = 1) -> None:
        torch.set_num_threads(num_threads)
        self.table = factory()
        if not isinstance(self.table, Table):
            raise TypeError(f"the table factory returned {type(self.table).__name__}, not a Table")
        self._cond: asyncio.Condition | None = None
        self._blocked_s = {"insert": 0.0, "sample": 0.0}
        self._waiting = {"insert": 0, "sample": 0}

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:  # created inside the actor's event loop
            self._cond = asyncio.Condition()
        return self._cond

    async def _changed(self) -> None:
        cond = self._condition()
        async with cond:
            cond.notify_all()

    async def _wait(self, op: str, deadline: float | None) -> bool:
        """Wait for a change of state or the deadline (the condition's lock is held); False once it has passed."""
        remaining = None if deadline is None else deadline - time.monotonic()
        if remaining is not None and remaining <= 0:
            return False
        start = time.monotonic()
        self._waiting[op] += 1
        try:
            await asyncio.wait_for(self._condition().wait(), remaining)
        except asyncio.TimeoutError:
            pass
        finally:
            self._waiting[op] -= 1
            self._blocked_s[op] += time.monotonic() - start
        return True

    async def insert(
        self, fields: Fields, n: int, priority: Any, timeout: float | None
    ) -> np.ndarray | _Timeout:
        table = self.table
        items = _to_td(fields, n)
        deadline = None if timeout is None else time.monotonic() + timeout
        done, keys = 0, []
        cond = self._condition()
        async with cond:
            while True:
                prio = priority if np.isscalar(priority) else priority[done:]
                try:
                    keys.append(table.insert(items[done:] if done else items, prio, timeout=0).numpy())
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
                if not await self._wait("insert", deadline):
                    # Returned, not raised: Ray does not carry an exception's attributes (keys, num_inserted).
                    return _Timeout(
                        f"table {table.name!r}: insert timed out after {timeout} s; {done} of {n} items were "
                        f"inserted (limiter {table.rate_limiter.counts()})",
                        np.concatenate(keys) if keys else np.empty(0, np.int64),
                    )

    async def sample(self, n: int, timeout: float | None) -> tuple[Fields, int] | _Timeout:
        table = self.table
        deadline = None if timeout is None else time.monotonic() + timeout
        cond = self._condition()
        async with cond:
            while True:
                try:
                    batch = table.sample(n, timeout=0)
                except TimeoutError:
                    if not await self._wait("sample", deadline):
                        return _Timeout(
                            f"table {table.name!r}: sample({n}) timed out after {timeout} s; nothing was sampled "
                            f"(size {table.size}, limiter {table.rate_limiter.counts()})"
                        )
                    continue
                cond.notify_all()
                return _to_fields(batch), n

    async def update_priorities(self, keys: np.ndarray, priorities: Any) -> None:
        self.table.update_priorities(keys, priorities)

    async def delete(self, keys: np.ndarray) -> int:
        deleted = self.table.delete(keys)
        if deleted:
            await self._changed()
        return deleted

    async def reset(self) -> None:
        self.table.reset()
        self._blocked_s = {"insert": 0.0, "sample": 0.0}
        await self._changed()

    async def size(self) -> int:
        return self.table.size

    async def info(self) -> dict[str, Any]:
        info = self.table.info()
        info["insert_blocked_s"] += self._blocked_s["insert"]
        info["sample_blocked_s"] += self._blocked_s["sample"]
        info["waiting_inserts"] += self._waiting["insert"]
        info["waiting_samples"] += self._waiting["sample"]
        return info

    async def checkpoint(self, path: str) -> str:
        return self.table.checkpoint(path)

    async def state_dict(self) -> dict[str, Any]:
        return self.table.state_dict()  # no await inside: a consistent snapshot between two table calls

    async def describe(self) -> tuple[str, int]:
        return self.table.name, self.table.max_size


class _Timeout:
    """A timed-out call's answer; the client raises it as ``TimeoutError``, or ``InsertTimeout`` with the keys."""

    def __init__(self, message: str, keys: np.ndarray | None = None) -> None:
        self.message, self.keys = message, keys

    def error(self) -> TimeoutError:
        if self.keys is None:
            return TimeoutError(self.message)
        return InsertTimeout(self.message, torch.from_numpy(np.array(self.keys, dtype=np.int64)))


class RayTableClient:
    """The Table API over a table actor. Picklable (it holds the actor handle): pass it to Ray tasks and actors on
    any machine of the cluster. Sampled tensors share the object store's memory and are read-only: copy before
    writing in place (``batch.clone()``)."""

    def __init__(self, actor: Any, name: str = "", max_size: int = 0) -> None:
        self.actor = actor
        self.name, self.max_size = name, max_size

    def __repr__(self) -> str:
        return f"RayTableClient(name={self.name!r}, max_size={self.max_size})"

    def _get(self, ref: Any) -> Any:
        try:
            result = ray.get(ref)
        except RayTaskError as err:  # the table's own error (ValueError, ...): raise it as such
            cause = err.cause if isinstance(err.cause, BaseException) else None
            if cause is None:
                raise
            raise cause from None
        except RayActorError as err:
            raise ConnectionError(f"replay table actor {self.name!r} is gone: {err}") from err
        if isinstance(result, _Timeout):
            raise result.error()
        return result

    def insert(
        self, items: TensorDictBase, priority: Any = 1.0, timeout: float | None = None
    ) -> torch.Tensor:
        """Insert a batch of items ([N] = N items, [] = one item); returns their keys. See :meth:`Table.insert`."""
        if not isinstance(items, TensorDictBase):
            raise TypeError(f"items must be a TensorDict, got {type(items).__name__}")
        if items.batch_dims == 0:
            items = items.unsqueeze(0)
        if isinstance(priority, torch.Tensor):
            priority = priority.detach().cpu().numpy()
        if not isinstance(priority, (int, float)):
            priority = np.asarray(priority, dtype=np.float64).reshape(-1)
            if priority.size == 1:
                priority = float(priority[0])
        timeout = check_timeout(timeout)
        n = int(items.batch_size[0])
        keys = self._get(self.actor.insert.remote(_to_fields(items), n, priority, timeout))
        return torch.from_numpy(np.array(keys, dtype=np.int64))

    def sample(self, num_samples: int, timeout: float | None = None) -> TensorDict:
        """Sample ``num_samples`` items once the limiter admits them; see :meth:`Table.sample`."""
        n = check_count(num_samples)
        timeout = check_timeout(timeout)
        fields, n = self._get(self.actor.sample.remote(n, timeout))
        return _to_td(fields, n)

    def update_priorities(self, keys: Any, priorities: Any) -> None:
        if isinstance(priorities, torch.Tensor):
            priorities = priorities.detach().cpu().numpy()
        self._get(self.actor.update_priorities.remote(as_keys(keys), priorities))

    def delete(self, keys: Any) -> int:
        return self._get(self.actor.delete.remote(as_keys(keys)))

    def reset(self) -> None:
        self._get(self.actor.reset.remote())

    @property
    def size(self) -> int:
        return self._get(self.actor.size.remote())

    def __len__(self) -> int:
        return self.size

    def info(self) -> dict[str, Any]:
        return self._get(self.actor.info.remote())

    def checkpoint(self, path: str) -> str:
        """Write the table to ``path`` on the actor's machine, atomically; returns the path."""
        return self._get(self.actor.checkpoint.remote(str(path)))

    def state_dict(self) -> dict[str, Any]:
        """The table's state (items, priorities, limiter counters), copied to the caller (``Table.load_state_dict``
        restores it; :meth:`checkpoint` writes it on the actor's machine instead)."""
        return self._get(self.actor.state_dict.remote())

    def kill(self) -> None:
        """Stop the actor (its table is lost; clients then raise ``ConnectionError``) and wait until it is gone."""
        ray.kill(self.actor)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                ray.get(self.actor.size.remote(), timeout=1.0)
            except (RayActorError, ray.exceptions.GetTimeoutError):
                return
            time.sleep(0.01)


class RayTable:
    """Creates table actors. ``create`` takes the :class:`Table` arguments; ``factory`` builds any table instead
    (e.g. ``functools.partial(Table.restore, path)`` or a table with a frame storage)."""

    @staticmethod
    def create(
        name: str,
        sampler: Selector | None = None,
        remover: Selector | None = None,
        max_size: int | None = None,
        rate_limiter: RateLimiter | None = None,
        max_times_sampled: int = 0,
        *,
        factory: Callable[[], Table] | None = None,
        actor_name: str | None = None,
        namespace: str | None = None,
        actor_options: dict[str, Any] | None = None,
        num_threads: int = 1,
        **table_kwargs: Any,
    ) -> RayTableClient:
        """Start a table actor and return a client for it.

        ``actor_name`` (and ``namespace``) register the actor so other drivers find it with :meth:`connect`;
        ``actor_options`` go to ``ray.remote(...).options`` (e.g. ``num_cpus``, ``resources``, ``lifetime``).
        """
        if factory is None:
            if sampler is None or remover is None or max_size is None or rate_limiter is None:
                raise ValueError("give sampler, remover, max_size and rate_limiter, or a factory")
            factory = _TableFactory(
                name, sampler, remover, max_size, rate_limiter, max_times_sampled, table_kwargs
            )
        options = dict(actor_options or {})
        options.setdefault("max_concurrency", 1000)
        if actor_name is not None:
            options["name"] = actor_name
            if namespace is not None:
                options["namespace"] = namespace
        actor = ray.remote(_TableActor).options(**options).remote(factory, num_threads)
        return RayTable._client(actor)

    @staticmethod
    def queue(name: str, max_size: int, **kwargs: Any) -> RayTableClient:
        """A FIFO queue table actor (see :meth:`Table.queue`)."""
        return RayTable.create(name, Fifo(), Fifo(), max_size, Queue(max_size), max_times_sampled=1, **kwargs)

    @staticmethod
    def stack(name: str, max_size: int, **kwargs: Any) -> RayTableClient:
        """A LIFO stack table actor (see :meth:`Table.stack`)."""
        return RayTable.create(name, Lifo(), Lifo(), max_size, Stack(max_size), max_times_sampled=1, **kwargs)

    @staticmethod
    def connect(actor_name: str, namespace: str | None = None) -> RayTableClient:
        """A client for a named table actor started elsewhere in the cluster."""
        return RayTable._client(ray.get_actor(actor_name, namespace=namespace))

    @staticmethod
    def _client(actor: Any) -> RayTableClient:
        client = RayTableClient(actor)
        client.name, client.max_size = client._get(
            actor.describe.remote()
        )  # also waits until the table exists
        return client


class _TableFactory:
    """Picklable ``Table(...)`` call."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __call__(self) -> Table:
        name, sampler, remover, max_size, rate_limiter, max_times_sampled, kwargs = self.args
        return Table(
            name, sampler, remover, max_size, rate_limiter, max_times_sampled=max_times_sampled, **kwargs
        )
