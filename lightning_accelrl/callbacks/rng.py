"""RNGState: saves the random generators' states in checkpoints and restores them on resume.

Lightning checkpoints hold the model, optimizers, schedulers, loops and callback states, but not the states of
torch's, numpy's and Python's global generators; a resumed run would then sample different actions and
minibatches than the run it continues. With this callback (a default of ``accelrl fit``) it does not.

Each rank's generators are saved (gathered to the checkpoint under DDP) and each rank gets its own back on
resume; with a different world size, ranks without a saved state keep their freshly seeded generators.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn


def capture_rng_state() -> dict[str, Any]:
    """The global generators' states in types ``torch.load(weights_only=True)`` accepts (tensors, lists, ints)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    version, internal, gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": [
            str(kind),
            torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            int(pos),
            int(has_gauss),
            float(cached),
        ],
        "python": [int(version), list(internal), gauss_next],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached)))
    version, internal, gauss_next = state["python"]
    random.setstate((int(version), tuple(int(x) for x in internal), gauss_next))
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


class RNGState(Callback):
    """Checkpoint and restore the torch, CUDA, numpy and Python generator states of every rank."""

    def __init__(self) -> None:
        self._loaded: list[dict[str, Any]] | None = None

    def state_dict(self) -> dict[str, Any]:
        local = capture_rng_state()
        states = [local]
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            world = torch.distributed.get_world_size()
            if world > 1:
                gathered: list[Any] = [None] * world
                torch.distributed.all_gather_object(gathered, local)  # every rank dumps the checkpoint
                states = gathered
        return {"ranks": states}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._loaded = list(state_dict.get("ranks") or [])

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Restore just before the first training batch, after anything the set-up drew from the generators."""
        if not self._loaded:
            return
        rank = trainer.global_rank
        if rank < len(self._loaded):
            restore_rng_state(self._loaded[rank])
        else:
            rank_zero_warn(
                f"RNGState: the checkpoint holds generator states for {len(self._loaded)} ranks; "
                f"ranks from {len(self._loaded)} on keep their fresh seeds"
            )
        if len(self._loaded) != trainer.world_size:
            rank_zero_warn(
                f"RNGState: checkpoint written with {len(self._loaded)} ranks, resuming with {trainer.world_size}"
            )
        self._loaded = None
