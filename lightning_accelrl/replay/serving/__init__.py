"""Serve a replay :class:`~lightning_accelrl.replay.Table` to many processes on one machine.

One module per job: :mod:`.wire` (token and message schema), :mod:`.buffers` (shared memory), :mod:`.server`
(the server process's loop), :mod:`.owner` (:class:`TableServer`, the owner's handle), :mod:`.client`
(:class:`TableClient`), :mod:`.processes` (signals and fork hygiene of child processes). See
``docs/replay_serving.md``.
"""

from lightning_accelrl.replay.serving.client import REPLY_GRACE_S, TableClient
from lightning_accelrl.replay.serving.owner import TableServer

__all__ = ["REPLY_GRACE_S", "TableClient", "TableServer"]
