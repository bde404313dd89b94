"""Atomic checkpoint files that load as data: a crash or ``kill -9`` while writing never corrupts the previous
checkpoint, and loading one never runs code.

Lightning's own ``TorchCheckpointIO`` writes through an fsspec transaction whose temporary file lives in the
system temp directory (often another file system, where the final move is a copy) and is never fsynced.
:class:`AtomicCheckpointIO` writes to a temporary file *in the checkpoint's directory*, fsyncs it, renames it
over the target with ``os.replace`` (atomic on POSIX and Windows) and fsyncs the directory, so the path holds
either the previous complete checkpoint or the new complete one — never a torn file. It loads with
``torch.load(weights_only=True)``: tensors and plain data only, a pickled object that would run code is refused.

``accelrl fit`` uses it by default. In your own Lightning project::

    trainer = L.Trainer(plugins=[AtomicCheckpointIO()], ...)
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from typing import Any

import torch
from lightning.fabric.utilities.cloud_io import get_filesystem
from lightning.pytorch.plugins.io import TorchCheckpointIO

from lightning_accelrl.atomic import atomic_write
from lightning_accelrl.errors import ConfigError


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save(obj, path)``, atomically: temp file in the same directory, fsync, ``os.replace``, fsync dir."""
    with atomic_write(path) as file:
        torch.save(obj, file)


class AtomicCheckpointIO(TorchCheckpointIO):
    """:class:`TorchCheckpointIO` whose local saves are atomic and durable and whose loads are data only.

    A process killed mid-write leaves at most a hidden ``.NAME.PID@HOST.XXXX.tmp`` file next to the checkpoint
    (swept by the next save into that directory); the checkpoint itself is untouched. Remote URLs keep
    Lightning's save path. Removing is Lightning's.
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

    def load_checkpoint(
        self,
        path: Any,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        """Lightning's load with ``weights_only=True`` (``weights_only=False`` is refused: checkpoints are data)."""
        if weights_only is False:
            raise ConfigError(
                f"{type(self).__name__} loads checkpoints as data only: weights_only=False is not supported"
            )
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            raise ConfigError(
                f"checkpoint {str(path)!r} holds Python objects other than tensors and plain data: refused "
                "(checkpoints are loaded as data only)"
            ) from None
