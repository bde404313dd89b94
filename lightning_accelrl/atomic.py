"""Atomic file writes: the target path holds either its previous complete content or the new complete content.

Used by replay-table checkpoints, ``summary.json`` and :class:`~lightning_accelrl.checkpoint_io.AtomicCheckpointIO`.
Standard library only (and :mod:`lightning_accelrl.errors`), so every layer may use it.

Temporary files are named ``.NAME.PID@HOST.XXXX.tmp``: a writer killed with ``kill -9`` leaves one behind, and the
next write into the same directory removes it once no process of that id runs on this host (a file of a live
writer, or of another host sharing the directory, is left alone). A full disk is reported as
``no space left on device: PATH``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from lightning_accelrl.errors import ConfigError

TEMP_SUFFIX = ".tmp"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_TEMP_NAME = re.compile(
    r"^\..+\.(?P<pid>\d+)@(?P<host>[A-Za-z0-9-]*)\.[A-Za-z0-9_]+" + re.escape(TEMP_SUFFIX) + "$"
)


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:64]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str]) -> Iterator[BinaryIO]:
    """Yield a binary file to write; on success it replaces ``path`` atomically and durably.

    The temporary file lives next to ``path`` (a rename within one file system is atomic), is fsynced before
    ``os.replace``, and the directory is fsynced after it. On any error (or a kill) the target is untouched and
    the temporary file is removed (a kill -9 can leave a hidden ``.NAME.PID@HOST.XXXX.tmp`` file behind, which a
    later write into the directory sweeps). A full disk raises :class:`ConfigError` ``no space left on device: PATH``.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale_temp_files(path.parent)
        fd, tmp = tempfile.mkstemp(
            prefix=f".{path.name}.{os.getpid()}@{_host()}.", suffix=TEMP_SUFFIX, dir=path.parent
        )
    except OSError as exc:
        _raise_if_disk_full(exc, path)
        raise
    try:
        with os.fdopen(fd, "wb") as file:
            with contextlib.suppress(AttributeError, OSError):  # mkstemp makes 0600 files: honour the umask
                os.fchmod(file.fileno(), 0o666 & ~_umask())
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        _raise_if_disk_full(exc, path)
        raise
    _fsync_dir(path.parent)


def _raise_if_disk_full(exc: BaseException, path: Path) -> None:
    """A full disk anywhere in the cause chain (torch wraps the writer's OSError in a RuntimeError) -> one line."""
    seen: BaseException | None = exc
    for _ in range(16):  # a chain is a few links; never loop on a cycle
        if seen is None:
            return
        if isinstance(seen, OSError) and seen.errno in _DISK_FULL:
            raise ConfigError(f"no space left on device: {path}") from exc
        seen = seen.__cause__ or seen.__context__


def sweep_stale_temp_files(directory: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files in ``directory`` whose writer (a process on this host) no longer runs."""
    host, removed = _host(), []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP_NAME.match(entry.name)
        if match is None or match["host"] != host or _alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            os.unlink(entry.path)
            removed.append(Path(entry.path))
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened or fsynced)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
