"""Atomic checkpoint files: a crash or ``kill -9`` while writing never corrupts the previous checkpoint.

Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lives in the
system temp directory (often another file system, where the final move is a copy) and is never fsynced.
:class:`AtomicCheckpointIO` writes to a temporary file *in the checkpoint's directory*, fsyncs it, renames it
over the target with ``os.replace`` (atomic on POSIX and Windows) and fsyncs the directory, so the path holds
either the previous complete checkpoint or the new complete one — never a torn file.

``accelrl fit`` uses it by default. In your own Lightning project::

    trainer = L.Trainer(plugins=[AtomicCheckpointIO()], ...)
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

TEMP_SUFFIX = ".tmp"


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)``, atomically: temp file in the same directory, fsync, ``os.replace``, fsync dir."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            with contextlib.suppress(AttributeError, OSError):  # mkstemp makes 0600 files: honour the umask
                os.fchmod(f.fileno(), 0o666 & ~_umask())
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX; a no-op where directories cannot be opened, e.g. Windows)."""
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


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose local saves are atomic and durable (remote URLs keep Lightning's path).

    A process killed mid-write leaves at most a hidden ``.NAME.XXXX.tmp`` file next to the checkpoint; the
    checkpoint itself is untouched. Loading and removing are Lightning's.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__}.save_checkpoint does not take storage_options")
        fs = get_filesystem(path)
        if type(fs).__name__ != "LocalFileSystem":
            super().save_checkpoint(checkpoint, path)
            return
        local = str(path).removeprefix("file://")
        atomic_torch_save(checkpoint, local)
