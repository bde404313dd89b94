"""Reverb-style replay tables in PyTorch: selectors, rate limiters, storages, checkpoints.

Other modules of this package add their own import lines below, one per line, in alphabetical order.
"""

from lightning_accelrl.replay import rate_limiters, selectors
from lightning_accelrl.replay.errors import InsertTimeout
from lightning_accelrl.replay.frames import FrameStackStorage, StreamIndexer
from lightning_accelrl.replay.nstep import NStepWriter
from lightning_accelrl.replay.serving import TableClient, TableServer
from lightning_accelrl.replay.storage import Storage, TensorStorage
from lightning_accelrl.replay.table import Table

__all__ = [
    "FrameStackStorage",
    "InsertTimeout",
    "NStepWriter",
    "Storage",
    "StreamIndexer",
    "Table",
    "TableClient",
    "TableServer",
    "TensorStorage",
    "rate_limiters",
    "selectors",
]


# RayTable, RayTableClient: imported on first use, so that importing replay needs no Ray.
def __getattr__(name: str):
    if name in ("RayTable", "RayTableClient"):
        from lightning_accelrl.replay import ray_table

        return getattr(ray_table, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
