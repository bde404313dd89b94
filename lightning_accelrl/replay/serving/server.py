"""The table server process: one loop that owns one or more named :class:`Table` objects and answers their clients.

- Every decision is made here, so no lock or condition is shared between processes (a process killed while
  holding one would lock everybody out).
- A connection is accepted only from a process of this user (``SO_PEERCRED``), and it must send the server's token
  first (compared in constant time) before any message is decoded. Sockets are non-blocking: a slow or silent peer
  never stalls the loop, and anything that does not follow the wire schema drops that one connection.
- The server never blocks on a call: it asks the table with ``timeout=0`` and *parks* a request the limiter refuses,
  retrying a table's parked requests after every change of that table's state and answering ``TimeoutError`` at
  their deadline. So a call blocked on one table never holds up calls on another.
- It exits when its owner closes the control pipe (``TableServer.stop()``) or dies.
"""

from __future__ import annotations

import contextlib
import hmac
import os
import selectors
import socket
import sys
import time
import traceback
from typing import Any

import msgpack
import numpy as np
import torch
from tensordict import TensorDictBase

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.replay.errors import InsertTimeout
from lightning_accelrl.replay.serving import wire
from lightning_accelrl.replay.serving.buffers import (
    SharedBuffers,
    export_state,
    import_state,
    layout_of,
    nest,
)
from lightning_accelrl.replay.serving.names import check_table_names, unknown_table
from lightning_accelrl.replay.serving.processes import child_signals
from lightning_accelrl.replay.storage import field_leaves
from lightning_accelrl.replay.table import Table

__all__ = ["LIVENESS_TICK_S", "serve_main"]

#: How often a waiting client or an idle server checks that its peer process still exists.
LIVENESS_TICK_S = 1.0
_AUTH_TIMEOUT_S = 5.0  # a connection that has not sent its token by then is dropped
_SERVER_OPS = ("server_info", "server_state", "load")  # requests on every table at once


class _Served:
    """One served table and the server's bookkeeping of it: its parked requests and their blocked time."""

    def __init__(self, table: Table) -> None:
        self.name = table.name
        self.table = table
        self.parked: list[_Request] = []
        self.blocked_s = {"insert": 0.0, "sample": 0.0}


class _Request:
    __slots__ = ("conn", "served", "op", "n", "priority", "deadline", "start", "done", "keys", "timeout")

    def __init__(
        self, conn: _Conn, served: _Served, op: str, n: int, priority: Any, timeout: float | None
    ) -> None:
        self.conn, self.served, self.op, self.n = conn, served, op, n
        self.priority, self.timeout = priority, timeout
        self.start = time.monotonic()
        self.deadline = None if timeout is None else self.start + timeout
        self.done = 0
        self.keys: list[np.ndarray] = []


class _Conn:
    """The server's side of one client connection (its shared buffers are per table)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reader = wire.FrameReader(expect_token=True)
        self.accepted_at = time.monotonic()
        self.staging: dict[str, SharedBuffers] = {}
        self.out: dict[str, SharedBuffers] = {}
        self.parked: _Request | None = None


class _Server:
    def __init__(self, tables: list[Table], listener: socket.socket, control: Any, token: bytes) -> None:
        self.tables = {t.name: _Served(t) for t in tables}
        self.names = tuple(self.tables)
        self.listener = listener
        self.control = control
        self.token = token
        self.sel = selectors.DefaultSelector()
        self.sel.register(listener, selectors.EVENT_READ, "listener")
        self.sel.register(control.fileno(), selectors.EVENT_READ, "control")
        self.conns: set[_Conn] = set()
        self.unauthenticated: set[_Conn] = set()
        self.ppid = os.getppid()
        self.running = True

    def _served(self, name: str | None) -> _Served:
        """The table a request names (the first table when it names none); ConfigError for an unknown name."""
        served = self.tables[self.names[0]] if name is None else self.tables.get(name)
        if served is None:
            raise unknown_table(name, self.names)
        return served

    def _parked(self) -> list[_Request]:
        return [r for served in self.tables.values() for r in served.parked]

    # -- the loop --------------------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while self.running:
                timeout = LIVENESS_TICK_S
                deadlines = [r.deadline for r in self._parked() if r.deadline is not None]
                if deadlines:
                    timeout = min(timeout, max(0.0, min(deadlines) - time.monotonic()))
                for key, _ in self.sel.select(timeout):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "control":
                        self._control()
                    elif key.data in self.conns:
                        self._readable(key.data)
                self._expire()
                if os.getppid() != self.ppid:  # owner gone (and the control pipe somehow still open)
                    self.running = False
        finally:
            for conn in list(self.conns):
                self._drop(conn)
            self.sel.close()
            self.listener.close()

    def _control(self) -> None:
        try:
            msg = self.control.recv_bytes()
        except (EOFError, OSError):
            self.running = False
            return
        if msg == b"stop":
            self.running = False

    def _accept(self) -> None:
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError, OSError):
            return
        try:
            _, uid = wire.peer_credentials(sock)
        except OSError:
            uid = -1
        if uid != os.getuid():
            sock.close()
            return
        sock.setblocking(False)
        conn = _Conn(sock)
        self.conns.add(conn)
        self.unauthenticated.add(conn)
        self.sel.register(sock, selectors.EVENT_READ, conn)

    def _drop(self, conn: _Conn) -> None:
        if conn not in self.conns:
            return
        self.conns.discard(conn)
        self.unauthenticated.discard(conn)
        if conn.parked is not None:
            self._unpark(conn.parked)
        with contextlib.suppress(Exception):
            self.sel.unregister(conn.sock)
        with contextlib.suppress(OSError):
            conn.sock.close()
        conn.reader.close()
        conn.staging, conn.out = {}, {}

    def _send(self, conn: _Conn, msg: list, fds: list[int] | None = None) -> None:
        try:
            wire.send(conn.sock, msg, fds)
        except (OSError, ValueError):  # gone, or not reading its replies (a full socket buffer): drop it
            self._drop(conn)

    def _readable(self, conn: _Conn) -> None:
        """Read what the peer sent and handle each complete message; any breach of the protocol drops it."""
        try:
            data, fds, _, _ = socket.recv_fds(conn.sock, conn.reader.wanted(), wire.MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(conn)
            return
        try:
            conn.reader.feed(data, fds)
            if not data:
                raise EOFError
            if conn.reader.token_pending:
                token = conn.reader.token()
                if token is None:
                    return
                if not hmac.compare_digest(token, self.token):
                    raise wire.ProtocolError("wrong token")
                self.unauthenticated.discard(conn)
            while conn in self.conns and (msg := conn.reader.next_message()) is not None:
                if conn.parked is not None:
                    raise wire.ProtocolError("a request while another is pending")
                self._handle(conn, wire.parse_request(msg))
        except (
            Exception
        ):  # end of file, a protocol breach, an unmappable buffer: that connection goes, we stay
            self._drop(conn)

    # -- requests --------------------------------------------------------------------------------------------------
    def _handle(self, conn: _Conn, req: wire.Request) -> None:
        if req.op == "stage":
            self._stage(conn, req)
            return
        states = self._received_state(conn, req) if req.op == "load" else None
        changed: list[_Served] = []
        try:
            if req.op in _SERVER_OPS:
                changed = self._handle_server(conn, req, states)
            else:
                served = self._served(req.table)
                if self._handle_table(conn, served, req):
                    changed = [served]
        except Exception as err:  # the tables' own errors go back to the caller
            self._send(conn, wire.encode_error(err))
        for served in changed:
            self._retry_parked(served)

    def _stage(self, conn: _Conn, req: wire.Request) -> None:
        fds = conn.reader.take_fds(len(req.layout or ()))
        try:
            if req.table is not None and req.table not in self.tables:
                raise wire.ProtocolError("a staging buffer for a table this server does not have")
            conn.staging[self._served(req.table).name] = SharedBuffers(req.layout or [], req.capacity, fds)
        finally:
            for fd in fds:
                os.close(fd)

    def _received_state(self, conn: _Conn, req: wire.Request) -> dict[str, Any]:
        """The state a ``load`` request passed through shared memory (a bad reference is a protocol breach)."""
        fd = conn.reader.take_fds(1)[0]
        try:
            return import_state(req.state, fd, req.capacity)
        finally:
            os.close(fd)

    def _handle_server(self, conn: _Conn, req: wire.Request, states: dict[str, Any] | None) -> list[_Served]:
        """A request on every table at once; returns the tables it changed."""
        if req.op == "server_info":
            self._send(conn, ["ok", {name: self._info(served) for name, served in self.tables.items()}])
        elif req.op == "server_state":
            self._send_state(conn, {name: served.table.state_dict() for name, served in self.tables.items()})
        elif req.op == "load":
            states = states or {}
            if sorted(states) != sorted(self.names):
                raise ConfigError(
                    f"the state holds tables {sorted(states)}, this server has {list(self.names)}: "
                    "load a state saved from a server with the same tables"
                )
            for name in self.names:  # each table checks its state before it changes anything
                served = self.tables[name]
                served.table.load_state_dict(states[name])
                served.blocked_s = {"insert": 0.0, "sample": 0.0}
            self._send(conn, ["ok", None])
            return list(self.tables.values())
        return []

    def _handle_table(self, conn: _Conn, served: _Served, req: wire.Request) -> bool:
        """A request on one table; returns whether that table changed."""
        table = served.table
        if req.op in ("insert", "sample"):
            priority = req.priority if req.op == "insert" else None
            return self._attempt(_Request(conn, served, req.op, req.n, priority, req.timeout), first=True)
        changed = False
        if req.op == "update":
            table.update_priorities(req.keys, req.priority)
            self._send(conn, ["ok", None])
        elif req.op == "delete":
            result = table.delete(req.keys)
            changed = result > 0
            self._send(conn, ["ok", result])
        elif req.op == "reset":
            table.reset()
            served.blocked_s = {"insert": 0.0, "sample": 0.0}
            changed = True
            self._send(conn, ["ok", None])
        elif req.op == "size":
            self._send(conn, ["ok", table.size])
        elif req.op == "info":
            self._send(conn, ["ok", self._info(served)])
        elif req.op == "checkpoint":
            self._send(conn, ["ok", table.checkpoint(req.path)])
        elif req.op == "state":
            self._send_state(conn, table.state_dict())
        return changed

    def _send_state(self, conn: _Conn, state: Any) -> None:
        tree, storage = export_state(state)
        self._send(conn, ["state", tree, storage.nbytes()], [int(storage._share_fd_cpu_()[0])])

    def _info(self, served: _Served) -> dict[str, Any]:
        info = served.table.info()
        now = time.monotonic()
        pending = {"insert": 0.0, "sample": 0.0}
        for r in served.parked:
            pending[r.op] += now - r.start
        info["insert_blocked_s"] += served.blocked_s["insert"] + pending["insert"]
        info["sample_blocked_s"] += served.blocked_s["sample"] + pending["sample"]
        info["waiting_inserts"] += sum(r.op == "insert" for r in served.parked)
        info["waiting_samples"] += sum(r.op == "sample" for r in served.parked)
        info["clients"] = len(self.conns)
        return info

    def _attempt(self, req: _Request, first: bool = False) -> bool:
        """Try (the rest of) a request without waiting. Returns whether its table changed; answers the client when
        the request is finished (or failed), parks it otherwise."""
        changed = False
        table = req.served.table
        try:
            if req.op == "insert":
                changed = self._insert_now(req, first)
                if req.done == req.n:
                    self._finish(req, ["ok", np.concatenate(req.keys).astype("<i8").tobytes()])
                    return changed
            elif table.rate_limiter.can_sample(req.n) or first:
                batch = self._sample_now(table, req.n, req.conn.out.get(req.served.name))
                if batch is not None:
                    self._deliver(req, batch)
                    return True
        except Exception as err:
            self._finish(req, wire.encode_error(err))
            return changed
        if (
            req.timeout is not None and time.monotonic() >= req.deadline
        ):  # timeout 0, or retried at the deadline
            self._timeout(req)
        elif first:
            req.served.parked.append(req)
            req.conn.parked = req
        return changed

    def _insert_now(self, req: _Request, first: bool) -> bool:
        staging = req.conn.staging.get(req.served.name)
        table = req.served.table
        if staging is None or req.n > staging.capacity:
            raise RuntimeError("insert without a staging buffer (client protocol error)")
        if not (first or table.rate_limiter.can_insert(1)):
            return False
        lo, hi = req.done, req.n
        items = nest(staging.keys, [t[lo:hi] for t in staging.tensors], hi - lo)
        prio = (
            req.priority if req.priority is None or isinstance(req.priority, float) else req.priority[lo:hi]
        )
        try:
            req.keys.append(table.insert(items, prio, timeout=0).numpy())
            req.done = req.n
            return True
        except InsertTimeout as err:
            k = err.num_inserted
            if k:
                req.keys.append(np.asarray(err.keys))  # type: ignore[attr-defined]
                req.done += k
            return k > 0

    @staticmethod
    def _sample_now(table: Table, n: int, out: SharedBuffers | None) -> TensorDictBase | None:
        """``table.sample(n, timeout=0)`` gathering straight into the caller's output buffer where it fits; None
        if the limiter refuses."""
        try:
            return table.sample(
                n, timeout=0, out=out.rows(n) if out is not None and n <= out.capacity else None
            )
        except TimeoutError:
            return None

    def _deliver(self, req: _Request, batch: TensorDictBase) -> None:
        conn, n, name = req.conn, req.n, req.served.name
        leaves = field_leaves(batch)
        layout = layout_of(leaves)
        out, fresh = conn.out.get(name), None
        if out is None or not out.matches(layout, n):
            out = fresh = SharedBuffers(layout, n if out is None else max(n, out.capacity))
            conn.out[name] = out
        for dst, (_, src) in zip(out.tensors, leaves):
            if src.data_ptr() != dst.data_ptr():
                dst[:n].copy_(src)
        if fresh is not None:
            self._finish(
                req,
                ["sample", n, [[list(k), d, list(s)] for k, d, s in fresh.layout], fresh.capacity],
                fresh.fds(),
            )
        else:
            self._finish(req, ["sample", n, None, None])

    def _finish(self, req: _Request, msg: list, fds: list[int] | None = None) -> None:
        if req.conn.parked is req:
            self._unpark(req)
        self._send(req.conn, msg, fds)

    def _unpark(self, req: _Request) -> None:
        if req in req.served.parked:
            req.served.parked.remove(req)
            req.served.blocked_s[req.op] += time.monotonic() - req.start
        if req.conn.parked is req:
            req.conn.parked = None

    def _timeout(self, req: _Request) -> None:
        table = req.served.table
        if req.op == "insert":
            keys = np.concatenate(req.keys) if req.keys else np.empty(0, np.int64)
            err: TimeoutError = InsertTimeout(
                f"table {table.name!r}: insert timed out after {req.timeout} s; {req.done} of {req.n} items were "
                f"inserted (limiter {table.rate_limiter.counts()})",
                torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            )
        else:
            err = TimeoutError(
                f"table {table.name!r}: sample({req.n}) timed out after {req.timeout} s; nothing was sampled "
                f"(size {table.size}, limiter {table.rate_limiter.counts()})"
            )
        self._finish(req, wire.encode_error(err))

    def _retry_parked(self, served: _Served) -> None:
        """Retry the requests parked on a table that changed (only its own state can admit them)."""
        progress = True
        while progress and served.parked:
            progress = False
            for req in list(served.parked):
                if req in served.parked and self._attempt(req):
                    progress = True

    def _expire(self) -> None:
        now = time.monotonic()
        for req in self._parked():
            if req.deadline is not None and now >= req.deadline:
                self._timeout(req)
        for conn in list(self.unauthenticated):  # connections that did not send their token in time
            if now - conn.accepted_at > _AUTH_TIMEOUT_S:
                self._drop(conn)


def _build_table(source: Any, control: Any) -> Table:
    """A served table: the owner's own object (fork), a state it sends through shared memory, or a factory."""
    if isinstance(source, Table):
        return source
    if source == "state":
        from multiprocessing.reduction import recv_handle

        tree = wire.decode(control.recv_bytes())
        fd = recv_handle(control)
        try:
            return Table.from_state(import_state(tree["state"], fd, int(tree["nbytes"])))
        finally:
            os.close(fd)
    table = source()
    if not isinstance(table, Table):
        raise TypeError(f"the table factory returned {type(table).__name__}, not a Table")
    return table


def serve_main(sources: list[Any], address: Any, token: bytes, control: Any) -> None:
    """Entry point of the server process: build the tables from ``sources`` (in order), listen, serve."""
    child_signals()  # Ctrl-C hits the whole group: let the owner stop us in order
    torch.set_num_threads(1)
    try:
        tables = [_build_table(source, control) for source in sources]
        check_table_names(t.name for t in tables)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(address)
        listener.listen(1024)
        listener.setblocking(False)
    except BaseException as err:
        control.send_bytes(msgpack.packb(["error", f"{type(err).__name__}: {err}\n{traceback.format_exc()}"]))
        return
    control.send_bytes(msgpack.packb(["ready", os.getpid(), [[t.name, t.max_size] for t in tables]]))
    try:
        _Server(tables, listener, control, token).run()
    finally:
        if isinstance(address, str) and not address.startswith("\0"):
            with contextlib.suppress(OSError):
                os.unlink(address)
    # Everything is closed (the shared buffers' names were unlinked at creation): skip the interpreter's slow
    # teardown of torch, which made a spawned server take over a second to stop.
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(0)
