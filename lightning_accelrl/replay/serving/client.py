"""The client of a table server: the :class:`~lightning_accelrl.replay.Table` API over a Unix socket.

A client addresses one of the server's tables; :meth:`TableClient.table` gives a client of another table that
shares its connection. Each process and thread gets its own connection, which serves every table. It checks that
the process at the other end is the server it was given (``SO_PEERCRED``: same user, same pid), then sends the
server's token. Item data never goes through the socket: an ``insert`` copies the items into the client's shared
staging buffer for that table, and the server gathers a ``sample`` into a shared output buffer per connection and
table; their descriptors are passed once when a buffer is (re)allocated. A lost server is a ``ConnectionError``:
end-of-file, a dead pid, or no answer ``REPLY_GRACE_S`` after a timed call's deadline.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import threading
import time
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.replay.serving import wire
from lightning_accelrl.replay.serving.buffers import (
    SharedBuffers,
    export_state,
    import_state,
    layout_of,
    nest,
)
from lightning_accelrl.replay.serving.names import check_table_names, pick_table
from lightning_accelrl.replay.serving.processes import drop_after_fork, pid_alive
from lightning_accelrl.replay.storage import field_leaves
from lightning_accelrl.replay.validation import as_keys, check_count, check_timeout

__all__ = ["REPLY_GRACE_S", "TableClient"]

#: Seconds a timed call waits for the server's answer beyond its own timeout before declaring the server lost.
REPLY_GRACE_S = 10.0
_LIVENESS_TICK_S = 1.0


class _Channel:
    """A client's connection (one per process and thread) and its shared buffers (per table)."""

    def __init__(self, address: Any, token: bytes, server_pid: int) -> None:
        self.pid = os.getpid()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(REPLY_GRACE_S)
            sock.connect(address)
            pid, uid = wire.peer_credentials(sock)
            if uid != os.getuid() or pid != server_pid:
                raise ConnectionRefusedError(
                    f"the process at the table's address is pid {pid} of uid {uid}, not the table server "
                    f"(pid {server_pid}, uid {os.getuid()})"
                )
            sock.sendall(token)
        except OSError as err:
            sock.close()
            raise ConnectionError(f"cannot reach the replay table server ({err})") from err
        self.sock = sock
        self.reader = wire.FrameReader(expect_token=False)
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLIN | select.POLLHUP | select.POLLERR)
        self.staging: dict[str, SharedBuffers] = {}
        self.out: dict[str, SharedBuffers] = {}
        self.closed = False
        drop_after_fork(self)

    def receive(self) -> Any:
        """The next message from the server (blocking; the caller polled first)."""
        while (msg := self.reader.next_message()) is None:
            data, fds, _, _ = socket.recv_fds(self.sock, self.reader.wanted(), wire.MAX_FDS)
            self.reader.feed(data, fds)
            if not data:
                raise EOFError("the server closed the connection")
        return msg

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            with contextlib.suppress(OSError):
                self.sock.close()
            self.reader.close()
        self.staging, self.out = {}, {}

    def _drop_after_fork(self) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


class TableClient:
    """The :class:`~lightning_accelrl.replay.Table` API of one of the tables a :class:`TableServer` serves.

    Picklable; connects on first use, once per process and thread (one connection serves every table: see
    :meth:`table`). Blocking calls and ``TimeoutError`` behave as the in-process table's; a lost server raises
    ``ConnectionError``. A sample's tensors are the caller's own (copied out of the shared output buffer).

    Args:
        name, max_size: the table this client addresses, and its size.
        tables: ``(name, max_size)`` of every table of the server, in the server's order (default: just this one).
    """

    def __init__(
        self,
        address: Any,
        token: bytes,
        server_pid: int,
        name: str,
        max_size: int,
        tables: list[tuple[str, int]] | None = None,
    ) -> None:
        if not isinstance(token, bytes) or len(token) != wire.TOKEN_BYTES:
            raise ValueError(f"a table server token is {wire.TOKEN_BYTES} bytes")
        self._address, self._token, self._server_pid = address, token, server_pid
        self._sizes = dict(tables) if tables is not None else {name: int(max_size)}
        check_table_names(self._sizes)
        self.name = pick_table(name, self.tables)
        self.max_size = self._sizes[self.name]
        self._local = threading.local()

    def __getstate__(self) -> dict:
        return {
            "address": self._address,
            "token": self._token,
            "server_pid": self._server_pid,
            "name": self.name,
            "max_size": self.max_size,
            "tables": list(self._sizes.items()),
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(
            state["address"],
            state["token"],
            state["server_pid"],
            state["name"],
            state["max_size"],
            [(name, size) for name, size in state["tables"]],
        )

    def __repr__(self) -> str:
        return f"TableClient(name={self.name!r}, tables={list(self._sizes)}, server_pid={self._server_pid})"

    @property
    def tables(self) -> tuple[str, ...]:
        """The names of the server's tables, in its order (the first is the default)."""
        return tuple(self._sizes)

    def table(self, name: str) -> TableClient:
        """A client of the server's table ``name`` that shares this client's connection (in each process and
        thread); ConfigError naming the server's tables if it has no such table."""
        other = TableClient(
            self._address,
            self._token,
            self._server_pid,
            pick_table(name, self.tables),
            0,
            list(self._sizes.items()),
        )
        other._local = self._local
        return other

    # -- connection ------------------------------------------------------------------------------------------------
    def _channel(self) -> _Channel:
        ch = getattr(self._local, "channel", None)
        if ch is not None and not ch.closed and ch.pid == os.getpid():
            return ch
        ch = _Channel(self._address, self._token, self._server_pid)
        self._local.channel = ch
        return ch

    def close(self) -> None:
        """Close this thread's connection, shared with the clients of the other tables (the next call reconnects)."""
        ch = getattr(self._local, "channel", None)
        if ch is not None:
            ch.close()
            self._local.channel = None

    def _lost(self, ch: _Channel, why: str) -> ConnectionError:
        ch.close()
        self._local.channel = None
        return ConnectionError(f"replay table server of {self.name!r} (pid {self._server_pid}) {why}")

    def _send(self, ch: _Channel, msg: list, fds: list[int] | None = None) -> None:
        try:
            wire.send(ch.sock, msg, fds)
        except OSError as err:
            raise self._lost(ch, f"is gone ({err})") from None

    def _call(
        self, ch: _Channel, msg: list, timeout: float | None = None, fds: list[int] | None = None
    ) -> list:
        """Send a request and wait for its answer: for ever while the server lives, or, for a call with a
        ``timeout``, at most ``REPLY_GRACE_S`` beyond it (the server answers ``TimeoutError`` at the deadline)."""
        self._send(ch, msg, fds)
        limit = None if timeout is None else time.monotonic() + timeout + REPLY_GRACE_S
        while not ch.reader.buf:
            left = (
                _LIVENESS_TICK_S
                if limit is None
                else min(_LIVENESS_TICK_S, max(0.0, limit - time.monotonic()))
            )
            if ch.poller.poll(left * 1000.0):
                break
            if limit is not None and time.monotonic() >= limit:
                raise self._lost(ch, f"did not answer within {timeout} + {REPLY_GRACE_S} s")
            if not pid_alive(self._server_pid):
                raise self._lost(ch, "has exited")
        try:
            reply = ch.receive()
        except (EOFError, OSError) as err:  # wire.ProtocolError is an OSError too
            raise self._lost(ch, f"closed the connection ({type(err).__name__}: {err})") from None
        if not isinstance(reply, list) or not reply:
            raise self._lost(ch, "sent a malformed reply")
        if reply[0] == "err":
            raise wire.decode_error(reply)
        return reply

    # -- the Table API ---------------------------------------------------------------------------------------------
    def insert(
        self, items: TensorDictBase, priority: Any = None, timeout: float | None = None
    ) -> torch.Tensor:
        """Insert a batch of items ([N] = N items, [] = one item); returns their keys. See :meth:`Table.insert`
        (``priority=None``: the table's largest priority so far)."""
        if not isinstance(items, TensorDictBase):
            raise TypeError(f"items must be a TensorDict, got {type(items).__name__}")
        timeout = check_timeout(timeout)
        if items.batch_dims == 0:
            items = items.unsqueeze(0)
        n = int(items.batch_size[0])
        priority = None if priority is None else _priorities(priority, n)
        ch = self._channel()
        leaves = field_leaves(items)
        layout = layout_of(leaves)
        staging = ch.staging.get(self.name)
        if staging is None or not staging.matches(layout, n):
            capacity = (
                max(n, 1) if staging is None or staging.layout != layout else max(n, 2 * staging.capacity)
            )
            staging = SharedBuffers(layout, capacity)
            wire_layout = [[list(k), d, list(s)] for k, d, s in layout]
            self._send(ch, ["stage", wire_layout, capacity, self.name], staging.fds())
            ch.staging[self.name] = staging
        with torch.no_grad():
            for dst, (_, src) in zip(staging.tensors, leaves):
                dst[:n].copy_(src)
        reply = self._call(ch, ["insert", n, priority, timeout, self.name], timeout)
        return torch.from_numpy(np.frombuffer(reply[1], dtype="<i8").astype(np.int64))

    def sample(self, num_samples: int, timeout: float | None = None) -> TensorDict:
        """Sample ``num_samples`` items once the limiter admits them; see :meth:`Table.sample`."""
        n = check_count(num_samples)
        timeout = check_timeout(timeout)
        ch = self._channel()
        _, n, layout, capacity = self._call(ch, ["sample", n, timeout, self.name], timeout)
        if layout is not None:
            try:
                fds = ch.reader.take_fds(len(layout))
                try:
                    ch.out[self.name] = SharedBuffers(wire.parse_layout(layout, capacity), capacity, fds)
                finally:
                    for fd in fds:
                        os.close(fd)
            except OSError as err:
                raise self._lost(ch, f"failed to pass the sample buffer ({err})") from None
        out = ch.out[self.name]
        return nest(out.keys, [t[:n].clone() for t in out.tensors], n)

    def update_priorities(self, keys: Any, priorities: Any) -> None:
        """New priorities for present keys (unknown keys ignored); see :meth:`Table.update_priorities`."""
        keys = as_keys(keys)
        self._call(
            self._channel(),
            ["update", keys.astype("<i8").tobytes(), _priorities(priorities, len(keys)), self.name],
        )

    def delete(self, keys: Any) -> int:
        """Delete items by key (unknown keys ignored); returns how many were deleted."""
        return self._call(self._channel(), ["delete", as_keys(keys).astype("<i8").tobytes(), self.name])[1]

    def reset(self) -> None:
        """Remove every item and zero the limiter counters."""
        self._call(self._channel(), ["reset", self.name])

    @property
    def size(self) -> int:
        return self._call(self._channel(), ["size", self.name])[1]

    def __len__(self) -> int:
        return self.size

    def info(self) -> dict[str, Any]:
        """The table's ``info()`` (blocked time and waiting calls counted by the server) plus ``clients``."""
        return self._call(self._channel(), ["info", self.name])[1]

    def checkpoint(self, path: str | os.PathLike) -> str:
        """Write the server's table to ``path`` (on this machine) atomically; returns the path."""
        return self._call(self._channel(), ["checkpoint", os.path.abspath(os.fspath(path)), self.name])[1]

    def state_dict(self) -> dict[str, Any]:
        """The server's ``Table.state_dict()`` of this table: a consistent snapshot (the server handles one request
        at a time), passed through shared memory that is freed as soon as both sides let go of it (no file)."""
        return self._fetch_state(["state", self.name])

    # -- every table of the server ---------------------------------------------------------------------------------
    def server_info(self) -> dict[str, dict[str, Any]]:
        """``info()`` of every table of the server, by name."""
        return self._call(self._channel(), ["server_info"])[1]

    def server_state_dict(self) -> dict[str, dict[str, Any]]:
        """``Table.state_dict()`` of every table of the server, by name, taken at one instant."""
        return self._fetch_state(["server_state"])

    def load_server_state_dict(self, states: dict[str, dict[str, Any]]) -> None:
        """Replace every table's contents and counters by ``states`` (from :meth:`server_state_dict` of a server
        with the same tables), between two requests; blocked calls are then retried."""
        if not isinstance(states, dict) or sorted(states) != sorted(self.tables):
            names = sorted(states) if isinstance(states, dict) else type(states).__name__
            raise ConfigError(
                f"the state holds tables {names}, this server has {list(self.tables)}: "
                "load a state saved from a server with the same tables"
            )
        tree, storage = export_state(states)  # kept alive until the server has answered
        self._call(self._channel(), ["load", tree, storage.nbytes()], fds=[int(storage._share_fd_cpu_()[0])])

    def _fetch_state(self, msg: list) -> Any:
        ch = self._channel()
        _, tree, nbytes = self._call(ch, msg)
        try:
            fd = ch.reader.take_fds(1)[0]
        except OSError as err:
            raise self._lost(ch, f"failed to pass the state buffer ({err})") from None
        try:
            return import_state(tree, fd, nbytes)
        finally:
            os.close(fd)


def _priorities(priority: Any, n: int) -> float | bytes:
    """Priorities as the wire carries them: one number (for every item), or float64 bytes (one per item)."""
    if isinstance(priority, torch.Tensor):
        priority = priority.detach().cpu().numpy()
    if isinstance(priority, (int, float)) and not isinstance(priority, bool):
        return float(priority)
    arr = np.asarray(priority, dtype=np.float64).reshape(-1)
    if arr.size == 1:
        return float(arr[0])
    if arr.size != n:
        raise ValueError(f"got {arr.size} priorities for {n} items")
    return arr.astype("<f8").tobytes()
