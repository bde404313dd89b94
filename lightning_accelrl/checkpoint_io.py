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

import os
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_accelrl.atomic import atomic_write


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)``, atomically: temp file in the same directory, fsync, ``os.replace``, fsync dir."""
    with atomic_write(path) as file:
        torch.save(obj, file)


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
