"""The owner's handle of a table server process: start it, hand out clients, save and load its tables, stop it."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from multiprocessing.reduction import send_handle
from typing import Any

import msgpack

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.replay.serving import wire
from lightning_accelrl.replay.serving.buffers import export_state
from lightning_accelrl.replay.serving.client import TableClient
from lightning_accelrl.replay.serving.names import pick_table
from lightning_accelrl.replay.serving.processes import drop_after_fork, sigint_blocked
from lightning_accelrl.replay.serving.server import serve_main
from lightning_accelrl.replay.table import Table

__all__ = ["TableServer"]

TableSource = Table | Callable[[], Table]


class TableServer:
    """Runs replay tables in their own process and hands out :class:`TableClient` objects for other processes.

    Args:
        table: a ``Table`` or a picklable callable that builds one (e.g. ``functools.partial(Table.queue, "q", 100)``),
            or a list of them: one server then hosts every table, each addressed by its name (a short identifier,
            distinct), the first being the default. A ``Table`` object is copied into the server (through shared
            memory unless the start method is ``fork``); the server's table is the one that counts from then on.
        start_method: how to start the server process: ``"spawn"`` (default, safest), ``"forkserver"`` or ``"fork"``
            (fast; the server calls ``torch.set_num_threads(1)`` before any torch op, as a forked child must).
        startup_timeout: seconds to wait for the server to build its tables and listen.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. Clients are picklable: pass
    ``server.client()`` to child processes (fork, spawn or forkserver); each connects on its first call.
    """

    def __init__(
        self,
        table: TableSource | Sequence[TableSource],
        start_method: str = "spawn",
        startup_timeout: float = 120.0,
    ) -> None:
        sources = list(table) if isinstance(table, (list, tuple)) else [table]
        if not sources:
            raise ConfigError("a TableServer needs at least one table")
        for source in sources:
            if not (isinstance(source, Table) or callable(source)):
                raise TypeError(f"table must be a Table or a callable returning one, got {source!r}")
        self._sources = sources
        self._ctx = mp.get_context(start_method)
        self.start_method = start_method
        self.startup_timeout = float(startup_timeout)
        self._process: Any = None
        self._control: Any = None
        self._address: Any = None
        self._token = secrets.token_bytes(wire.TOKEN_BYTES)
        self._tmpdir: str | None = None
        self.pid: int | None = None
        self.name: str | None = None  # the first (default) table's
        self.max_size: int | None = None
        self._sizes: list[tuple[str, int]] = []  # (name, max_size) of every table, in order
        self._pending_state: dict[str, Any] | None = None
        self._owner_pid = os.getpid()
        drop_after_fork(self)

    # -- lifecycle -------------------------------------------------------------------------------------------------
    def start(self) -> TableServer:
        if self._process is not None:
            raise RuntimeError("TableServer already started")
        if sys.platform.startswith("linux"):  # the abstract namespace: no file at all
            self._address = f"\0lightning_accelrl-replay-{os.getpid()}-{secrets.token_hex(8)}"
        else:
            self._tmpdir = tempfile.mkdtemp(prefix="accelrl-")
            self._address = os.path.join(self._tmpdir, "table.sock")
        by_state = [isinstance(s, Table) and self.start_method != "fork" for s in self._sources]
        ours, theirs = self._ctx.Pipe(duplex=True)
        self._control = (
            ours  # set before the fork: a forked server must close this end (see _drop_after_fork)
        )
        process = self._ctx.Process(
            target=serve_main,
            args=(
                ["state" if shm else s for s, shm in zip(self._sources, by_state)],
                self._address,
                self._token,
                theirs,
            ),
            name="replay-table-server",
            daemon=True,
        )
        try:
            with sigint_blocked():
                process.start()
        finally:
            theirs.close()
        self._process = process
        try:
            for source, shm in zip(self._sources, by_state):
                if shm:
                    self._send_table(ours, process.pid, source)
            self._await_ready(ours, process)
            if self._pending_state is not None:
                self.load_state_dict(self._pending_state)
        except BaseException:
            self.stop()
            raise
        return self

    def _send_table(self, control: Any, pid: int, table: Table) -> None:
        """Pass a table's state to the server through shared memory (its descriptor over the control pipe)."""
        tree, storage = export_state(table.state_dict())
        control.send_bytes(wire.encode_payload({"state": tree, "nbytes": storage.nbytes()}))
        send_handle(control, int(storage._share_fd_cpu_()[0]), pid)

    def _await_ready(self, control: Any, process: Any) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while not control.poll(0.1):
            if not process.is_alive():
                raise RuntimeError(f"table server exited during start-up (exit code {process.exitcode})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"table server did not start within {self.startup_timeout} s")
        try:
            msg = msgpack.unpackb(control.recv_bytes(), raw=False)
        except EOFError:
            process.join(5)
            raise RuntimeError(
                f"table server exited during start-up (exit code {process.exitcode})"
            ) from None
        if msg[0] != "ready":
            raise RuntimeError(f"table server failed to start: {msg[1]}")
        _, self.pid, sizes = msg
        self._sizes = [(name, int(size)) for name, size in sizes]
        self.name, self.max_size = self._sizes[0]

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the server (its clients then raise ``ConnectionError``) and wait for its process to exit."""
        process, control = self._process, self._control
        self._control = None
        if control is not None:
            with contextlib.suppress(OSError, ValueError):
                control.send_bytes(b"stop")
            with contextlib.suppress(OSError):
                control.close()
        if process is None:
            return
        process.join(timeout)
        if process.is_alive():
            process.terminate()
            process.join(timeout)
        if process.is_alive():
            process.kill()
            process.join(timeout)
        with contextlib.suppress(ValueError):
            process.close()
        self._process = None
        if self._tmpdir is not None:
            with contextlib.suppress(OSError):
                if os.path.exists(self._address):
                    os.unlink(self._address)
                os.rmdir(self._tmpdir)
            self._tmpdir = None

    @property
    def address(self) -> Any:
        """The server's Unix socket address (a name in Linux's abstract namespace, starting with NUL)."""
        return self._address

    def is_alive(self) -> bool:
        return self._process is not None and self._process.is_alive()

    @property
    def tables(self) -> tuple[str, ...]:
        """The names of the served tables, in the order given (known once started)."""
        return tuple(name for name, _ in self._sizes)

    def client(self, table: str | None = None) -> TableClient:
        """A client of the table named ``table`` (default: the first table); picklable, so it can be passed to
        other processes. ``client.table(name)`` gives a client of another table over the same connection."""
        if self._process is None or self.pid is None:
            raise RuntimeError("start the TableServer before asking for clients")
        name = pick_table(table, self.tables)
        return TableClient(self._address, self._token, self.pid, name, dict(self._sizes)[name], self._sizes)

    # -- every table's state ---------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, dict[str, Any]]:
        """Every table's ``Table.state_dict()``, by name, taken at one instant (loads with
        ``torch.load(weights_only=True)``)."""
        client = self.client()
        try:
            return client.server_state_dict()
        finally:
            client.close()

    def load_state_dict(self, state: dict[str, dict[str, Any]]) -> None:
        """Replace every table's contents and counters by ``state`` (from :meth:`state_dict` of a server with the
        same tables): at once if the server runs, else as soon as :meth:`start` has built the tables."""
        if self._process is None:
            self._pending_state = state
            return
        client = self.client()
        try:
            client.load_server_state_dict(state)
        finally:
            client.close()
        self._pending_state = None

    def __enter__(self) -> TableServer:
        if self._process is None:
            self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_process", None) is not None and getattr(self, "_owner_pid", -1) == os.getpid():
            with contextlib.suppress(Exception):
                self.stop(timeout=1.0)

    def __getstate__(self) -> dict:
        raise TypeError("a TableServer stays with the process that started it; pass server.client() instead")

    def _drop_after_fork(self) -> None:
        """In a forked child: close our end of the control pipe (so the server sees its owner leave) and forget
        the process (only the owner stops it)."""
        if self._control is not None:
            with contextlib.suppress(OSError):
                self._control.close()
        self._control = None
        self._process = None
        self._owner_pid = -1

    def __repr__(self) -> str:
        state = "running" if self.is_alive() else "stopped"
        return f"TableServer(tables={list(self.tables)}, pid={self.pid}, {state})"
