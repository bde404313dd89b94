"""Import path kept for callers of the table server before it moved to :mod:`lightning_accelrl.replay.serving`."""

from lightning_accelrl.replay.serving.client import REPLY_GRACE_S, TableClient
from lightning_accelrl.replay.serving.owner import TableServer
from lightning_accelrl.replay.serving.processes import child_signals, sigint_blocked

__all__ = ["REPLY_GRACE_S", "TableClient", "TableServer", "child_signals", "sigint_blocked"]
