"""Serve replay :class:`Table` objects beyond one machine: a Ray async actor owns one or more named tables; clients
anywhere in the Ray cluster call them through :class:`RayTableClient` (the Table API). Needs the ``ray`` extra.

- The actor body is :class:`~lightning_accelrl.replay.ray_table_actor.TableActor`: its methods are ``async def``, so
  a call blocked on one table leaves the actor serving every other call, on every table.
- Item data travels as stacked **numpy** arrays through Ray's object store (no copy on the way back).
- Bind Ray to loopback unless you mean to serve other machines:
  :func:`~lightning_accelrl.replay.ray_local.start_local_ray` starts a single-node Ray on 127.0.0.1.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.replay.rate_limiters import Queue, RateLimiter, Stack
from lightning_accelrl.replay.ray_table_actor import TableActor, Timeout, to_fields, to_td
from lightning_accelrl.replay.selectors import Fifo, Lifo, Selector
from lightning_accelrl.replay.serving.names import check_table_names, pick_table
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


class RayTableClient:
    """The Table API of one table of a table actor. Picklable (it holds the actor handle): pass it to Ray tasks and
    actors on any machine of the cluster. Sampled tensors share the object store's memory and are read-only: copy
    before writing in place (``batch.clone()``).

    Args:
        actor: the actor handle; ``tables``: ``(name, max_size)`` of each of its tables, in order; ``name``: the
            table this client addresses (default: the first).
    """

    def __init__(self, actor: Any, tables: Sequence[tuple[str, int]], name: str | None = None) -> None:
        self.actor = actor
        self._sizes = {table: int(size) for table, size in tables}
        check_table_names(self._sizes)
        self.name = pick_table(name, self.tables)
        self.max_size = self._sizes[self.name]

    def __repr__(self) -> str:
        return f"RayTableClient(name={self.name!r}, max_size={self.max_size}, tables={list(self._sizes)})"

    @property
    def tables(self) -> tuple[str, ...]:
        """The names of the actor's tables, in its order (the first is the default)."""
        return tuple(self._sizes)

    def table(self, name: str) -> RayTableClient:
        """A client of the actor's table ``name``; ConfigError naming the actor's tables if it has no such table."""
        return RayTableClient(self.actor, list(self._sizes.items()), pick_table(name, self.tables))

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
        if isinstance(result, Timeout):
            raise result.error()
        return result

    def insert(
        self, items: TensorDictBase, priority: Any = None, timeout: float | None = None
    ) -> torch.Tensor:
        """Insert a batch of items ([N] = N items, [] = one item); returns their keys. See :meth:`Table.insert`
        (``priority=None``: the table's largest priority so far)."""
        if not isinstance(items, TensorDictBase):
            raise TypeError(f"items must be a TensorDict, got {type(items).__name__}")
        if items.batch_dims == 0:
            items = items.unsqueeze(0)
        if isinstance(priority, torch.Tensor):
            priority = priority.detach().cpu().numpy()
        if priority is not None and not isinstance(priority, (int, float)):
            priority = np.asarray(priority, dtype=np.float64).reshape(-1)
            if priority.size == 1:
                priority = float(priority[0])
        timeout = check_timeout(timeout)
        n = int(items.batch_size[0])
        keys = self._get(self.actor.insert.remote(self.name, to_fields(items), n, priority, timeout))
        return torch.from_numpy(np.array(keys, dtype=np.int64))

    def sample(self, num_samples: int, timeout: float | None = None) -> TensorDict:
        """Sample ``num_samples`` items once the limiter admits them; see :meth:`Table.sample`."""
        n = check_count(num_samples)
        timeout = check_timeout(timeout)
        fields, n = self._get(self.actor.sample.remote(self.name, n, timeout))
        return to_td(fields, n)

    def update_priorities(self, keys: Any, priorities: Any) -> None:
        if isinstance(priorities, torch.Tensor):
            priorities = priorities.detach().cpu().numpy()
        self._get(self.actor.update_priorities.remote(self.name, as_keys(keys), priorities))

    def delete(self, keys: Any) -> int:
        return self._get(self.actor.delete.remote(self.name, as_keys(keys)))

    def reset(self) -> None:
        self._get(self.actor.reset.remote(self.name))

    @property
    def size(self) -> int:
        return self._get(self.actor.size.remote(self.name))

    def __len__(self) -> int:
        return self.size

    def info(self) -> dict[str, Any]:
        return self._get(self.actor.info.remote(self.name))

    def checkpoint(self, path: str) -> str:
        """Write the table to ``path`` on the actor's machine, atomically; returns the path."""
        return self._get(self.actor.checkpoint.remote(self.name, str(path)))

    def state_dict(self) -> dict[str, Any]:
        """The table's state (items, priorities, limiter counters), copied to the caller (``Table.load_state_dict``
        restores it; :meth:`checkpoint` writes it on the actor's machine instead)."""
        return self._get(self.actor.state_dict.remote(self.name))

    # -- every table of the actor ----------------------------------------------------------------------------------
    def server_info(self) -> dict[str, dict[str, Any]]:
        """``info()`` of every table of the actor, by name."""
        return self._get(self.actor.server_info.remote())

    def server_state_dict(self) -> dict[str, dict[str, Any]]:
        """``Table.state_dict()`` of every table of the actor, by name, taken at one instant (loads with
        ``torch.load(weights_only=True)``)."""
        return self._get(self.actor.server_state_dict.remote())

    def load_server_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        """Replace every table's contents and counters by ``states`` (from :meth:`server_state_dict` of an actor
        with the same tables); blocked calls are then retried."""
        if not isinstance(states, dict) or sorted(states) != sorted(self.tables):
            names = sorted(states) if isinstance(states, dict) else type(states).__name__
            raise ConfigError(
                f"the state holds tables {names}, this actor has {list(self.tables)}: "
                "load a state saved from an actor with the same tables"
            )
        self._get(self.actor.load_server_state_dict.remote(states))

    def kill(self) -> None:
        """Stop the actor (its tables are lost; clients then raise ``ConnectionError``) and wait until it is gone."""
        ray.kill(self.actor)
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            try:
                ray.get(self.actor.describe.remote(), timeout=1.0)
            except (RayActorError, ray.exceptions.GetTimeoutError):
                return
            time.sleep(0.01)


class RayTable:
    """Creates table actors. ``create`` takes the :class:`Table` arguments; ``factory`` builds any table instead
    (e.g. ``functools.partial(Table.restore, path)`` or a table with a frame storage); ``serve`` puts several
    tables in one actor."""

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
        return RayTable.serve(
            [factory],
            actor_name=actor_name,
            namespace=namespace,
            actor_options=actor_options,
            num_threads=num_threads,
        )

    @staticmethod
    def serve(
        factories: Sequence[Callable[[], Table]],
        *,
        actor_name: str | None = None,
        namespace: str | None = None,
        actor_options: dict[str, Any] | None = None,
        num_threads: int = 1,
    ) -> RayTableClient:
        """Start one actor hosting a table per factory (picklable callables; the tables' names, short identifiers,
        must differ) and return a client of the first; ``client.table(name)`` addresses the others. The other
        arguments are :meth:`create`'s."""
        if not factories:
            raise ConfigError("RayTable.serve needs at least one table factory")
        options = dict(actor_options or {})
        options.setdefault("max_concurrency", 1000)
        if actor_name is not None:
            options["name"] = actor_name
            if namespace is not None:
                options["namespace"] = namespace
        actor = ray.remote(TableActor).options(**options).remote(list(factories), num_threads)
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
    def connect(actor_name: str, namespace: str | None = None, table: str | None = None) -> RayTableClient:
        """A client for table ``table`` (default: the first) of a named table actor started elsewhere."""
        return RayTable._client(ray.get_actor(actor_name, namespace=namespace), table)

    @staticmethod
    def _client(actor: Any, table: str | None = None) -> RayTableClient:
        try:  # also waits until the tables exist
            tables = ray.get(actor.describe.remote())
        except RayActorError as err:  # its message holds the factories' error (a bad table name, ...)
            raise ConnectionError(f"replay table actor failed to start or is gone: {err}") from err
        return RayTableClient(actor, tables, table)


class _TableFactory:
    """Picklable ``Table(...)`` call."""

    def __init__(self, *args: Any) -> None:
        self.args = args

    def __call__(self) -> Table:
        name, sampler, remover, max_size, rate_limiter, max_times_sampled, kwargs = self.args
        return Table(
            name, sampler, remover, max_size, rate_limiter, max_times_sampled=max_times_sampled, **kwargs
        )
