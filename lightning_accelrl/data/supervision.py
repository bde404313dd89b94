"""What the async and Ray sources share on the learner's side: env streams and seeds, resume points, the agent
copy shipped to samplers, and waiting for data while watching the samplers."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDict

from lightning_accelrl.errors import ConfigError

CHECK_S = 0.5  # how often the learner checks that its samplers are alive (also its sample timeout)
INSERT_TIMEOUT_S = 1.0  # a blocked insert in a sampler wakes this often to see whether it should stop


class SamplerProcessError(RuntimeError):
    """A sampler process (or the table server) died: the run cannot go on with the data it promised."""


def sampler_stream(rank: int, num_procs: int, idx: int, restarts: int = 0, world_size: int = 1) -> int:
    """The env stream (seed block and frame-stack stream ids) of sampler ``idx`` of ``rank`` after ``restarts``
    restarts of that sampler: a restarted sampler gets a block no sampler of any rank used before, so it neither
    replays the episodes of the process it replaces nor reuses its frame-stack keys in the table."""
    return (restarts * world_size + rank) * num_procs + idx


def streams_end(offset: int, num_procs: int, attempts: list[int], world_size: int = 1) -> int:
    """Above every env stream a rank's samplers used with ``attempts`` restarts per slot (and every other rank's,
    had it restarted as often), streams of a resumed run starting at ``offset`` included."""
    return offset + sampler_stream(0, num_procs, 0, max(attempts) + 1, world_size)


def stream_seed(base_seed: int, stream: int) -> int:
    """Seed of the torch generator of the sampler on env stream ``stream``: forked children inherit the learner's
    generator state, so without their own seed every sampler would draw the same exploration noise."""
    return (base_seed + 7919 * (stream + 1)) % 2**63


def resume_point(resume: dict[str, Any], kind: str, num_procs: int) -> tuple[dict[str, Any], int, list[int]]:
    """(table state, stream offset, env steps per sampler slot) of a source's ``state_dict`` for a run with
    ``num_procs`` samplers; another number of samplers goes on with the whole count in slot 0."""
    if resume.get("kind") != kind:
        raise ConfigError(
            f"the checkpoint holds an async {resume.get('kind')} table; this run needs a {kind} table"
        )
    steps = [int(x) for x in torch.as_tensor(resume["env_steps"]).reshape(-1).tolist()]
    if len(steps) != num_procs:
        steps = [sum(steps)] + [0] * (num_procs - 1)
    return resume["table"], int(resume["stream_end"]), steps


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``: errors from other processes, kept to one line."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


class Watchdog:
    """Calls ``check()`` (raises when a sampler died beyond its restarts) at most every :data:`CHECK_S`."""

    def __init__(self, check: Callable[[], None]) -> None:
        self.check = check
        self.next_check = 0.0

    def tick(self) -> None:
        now = time.monotonic()
        if now >= self.next_check:
            self.check()
            self.next_check = now + CHECK_S


def watched_sample(
    watchdog: Watchdog,
    sample: Callable[..., TensorDict],
    n: int,
    finished: Callable[[], bool],
    table_name: str,
) -> TensorDict | None:
    """``sample(n, timeout=...)`` from a served table while watching the samplers.

    Waits while the limiter refuses, ticking the watchdog; returns None once ``finished()`` (every sampler is
    done) and the table supplies no more; a lost table becomes a one-line :class:`SamplerProcessError`.
    """
    while True:
        watchdog.tick()
        try:
            return sample(n, timeout=CHECK_S)
        except TimeoutError:
            watchdog.check()
            if finished():
                return None
        except ConnectionError as err:
            watchdog.check()
            raise SamplerProcessError(f"lost {table_name} ({first_line(err)})") from None
