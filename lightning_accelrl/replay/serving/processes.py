"""Process hygiene for the table server and other children the library starts: signals, fork, liveness."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import weakref
from typing import Any

__all__ = ["child_signals", "drop_after_fork", "pid_alive", "sigint_blocked"]

_INHERITED: weakref.WeakSet = weakref.WeakSet()  # objects holding descriptors that forked children must drop


def drop_after_fork(obj: Any) -> None:
    """Call ``obj._drop_after_fork()`` in every child forked from now on (while ``obj`` lives)."""
    _INHERITED.add(obj)


def _after_fork_in_child() -> None:
    for obj in list(_INHERITED):
        with contextlib.suppress(Exception):
            obj._drop_after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


@contextlib.contextmanager
def sigint_blocked() -> Any:
    """Block SIGINT in this thread while starting a child that will ignore it.

    A Ctrl-C that arrives between ``fork`` and the child's ``signal(SIGINT, SIG_IGN)`` would otherwise raise
    ``KeyboardInterrupt`` in the half-started child (it inherits the parent's Python handler). Blocked, it stays
    pending in the child, and :func:`child_signals` discards it; the parent's own copy is delivered on exit
    from this block (or to another thread of the parent at once).
    """
    blockable = hasattr(signal, "pthread_sigmask") and threading.current_thread() is threading.main_thread()
    if not blockable:
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def child_signals() -> None:
    """First call in a child started under :func:`sigint_blocked`: ignore SIGINT (the owner stops us in order),
    take SIGTERM's default action (a forked child inherits the owner's Python SIGTERM handler, e.g. Lightning's,
    which would turn ``terminate()`` into a log line), then unblock SIGINT (a pending one is discarded)."""
    with contextlib.suppress(ValueError):  # not the main thread (never, in practice)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
