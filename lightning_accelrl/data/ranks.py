"""What ranks agree on: per-rank state in one checkpoint, and when to stop with how many env steps.

Each rank's experience source (its replay table, its episode window) is gathered into rank 0's checkpoint as a
list indexed by global rank, and each rank restores its own entry.

Lightning calls ``state_dict`` on every rank but writes rank 0's result only, hence the gather (over a gloo group:
object collectives over NCCL would stage every rank's pickled table in GPU memory).
"""

from __future__ import annotations

import atexit
import gc
from typing import Any

import torch

from lightning_accelrl.errors import ConfigError

_CPU_GROUP: list[Any] = [None, None]  # [default process group it was made for, the gloo group]
_DESTROY_AT_EXIT: list[bool] = [False]  # whether this process registered the exit handler


def distributed() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def destroy_process_groups_at_exit() -> None:
    """Destroy and free the process groups when this process exits, while the interpreter is still whole (once per
    process; a no-op outside a distributed run).

    Lightning registers this for NCCL only. A gloo group left to interpreter finalization can abort the process
    (``terminate called without an active exception``, pytorch/pytorch#190489): a ``ddp_spawn`` worker, which
    exits through ``sys.exit``, died with SIGABRT after its fit had finished.
    """
    if distributed() and not _DESTROY_AT_EXIT[0]:
        atexit.register(_destroy_process_groups)
        _DESTROY_AT_EXIT[0] = True


def _destroy_process_groups() -> None:
    _CPU_GROUP[:] = [None, None]  # our own references go first, so the groups can be freed here
    if distributed():
        torch.distributed.destroy_process_group()  # the default group and every group made from it
    # free now what still refers to a group from a reference cycle (a DDP wrapper inside the finished trainer):
    # a gloo group freed during finalization is what aborted the process
    gc.collect()


def _cpu_group() -> Any:
    """A gloo group over all ranks (made once per default process group; every rank must call this)."""
    world = torch.distributed.group.WORLD
    if _CPU_GROUP[0] is not world:
        _CPU_GROUP[:] = [world, torch.distributed.new_group(backend="gloo")]
    return _CPU_GROUP[1]


def gather_rank_states(local: Any, world_size: int) -> list[Any]:
    """Every rank's ``local`` on rank 0 (a list indexed by global rank), over CPU; collective: call on all ranks.

    Other ranks get a list with only their own entry (what a strategy that writes one file per rank would need).
    """
    if world_size == 1 or not distributed():
        return [local]
    dist = torch.distributed
    rank = dist.get_rank()
    out: list[Any] | None = [None] * world_size if rank == 0 else None
    dist.gather_object(local, out, dst=0, group=_cpu_group())
    if out is None:
        out = [None] * world_size
        out[rank] = local
    return out


def all_ranks_step(strategy: Any, has_batch: bool, env_steps: int) -> tuple[bool, int]:
    """(whether every rank has a batch, env steps of all ranks) in one all-reduce; collective, once per batch.

    Every rank stops at the same batch and pushes the same env-step count into its algorithm: with async samplers
    each rank's count runs on its own, and schedules derived from it (the learning rate) must agree on every rank
    for the parameters to stay identical.
    """
    t = torch.tensor([float(has_batch), float(env_steps)], dtype=torch.float64, device=strategy.root_device)
    agreed, steps = strategy.reduce(t, reduce_op="sum").tolist()
    return agreed == strategy.world_size, int(steps)


def own_rank_state(ranks: list[Any], rank: int, world_size: int) -> Any:
    """This rank's entry of a gathered list, checked before anything is restored.

    Another world size resumes only sources without replay tables (rollouts, which run in lockstep, so every rank
    has the same counts): rank ``r`` then continues from the saved rank ``r mod saved``.
    """
    saved = len(ranks)
    if saved != world_size:
        if any(isinstance(r, dict) and _holds_table(r) for r in ranks):
            raise ConfigError(
                f"this checkpoint holds the replay tables of {saved} rank(s), but this run has {world_size}: "
                f"resume it with {saved} processes (devices x nodes), or start a new run from its weights "
                "(see docs/scaling.md)"
            )
        return ranks[rank % saved]
    if ranks[rank] is None:
        raise ConfigError(f"this checkpoint has no state for rank {rank} (it was not written by rank 0)")
    return ranks[rank]


def _holds_table(state: dict[str, Any]) -> bool:
    source = state.get("source")
    return isinstance(source, dict) and source.get("table") is not None
