"""Shared settings and helpers of the replay benchmark (numpy and the standard library only: it is imported by
``bench_ours.py``/``bench_torchrl.py`` in our venv and by ``bench_reverb.py`` in the Reverb venv).

Items (the same for every library):
- ``small``: ``obs`` float32[4], ``action`` int64, ``reward`` float32, ``done`` bool: 29 bytes of payload.
- ``frames``: a DQN transition with 84x84 uint8 frame stacks of 4: ``obs`` uint8[4, 84, 84] and ``next_obs``
  uint8[4, 84, 84] (next_obs = obs shifted by one frame, as consecutive env steps give), plus ``action``, ``reward``,
  ``done``: 56,461 bytes of payload per item. Our `FrameStackStorage` also gets the int64 ``stream``/``step``
  keys it needs (not counted as payload). Frame pixels are random bytes (incompressible).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

STACK, H, W = 4, 84, 84
FRAME_BYTES = H * W
SMALL_BYTES = 4 * 4 + 8 + 4 + 1
FRAMES_BYTES = 2 * STACK * FRAME_BYTES + 8 + 4 + 1
ITEM_BYTES = {"small": SMALL_BYTES, "frames": FRAMES_BYTES}

SMALL_CAPACITY = 50_000
FRAMES_CAPACITY = 4_096
BATCH = 256
PRIORITY_EXPONENT = 0.6
FRAME_POOL = 1_024  # distinct frames cycled through by the item generator (content only)

# Operations, in the order every library runs them. kind.op -> items per call
OPS = [
    ("small", "insert_single"),
    ("small", "insert_batch256"),
    ("small", "sample256_uniform"),
    ("small", "sample256_prioritized"),
    ("small", "update_priorities256"),
    ("frames", "insert_single"),
    ("frames", "insert_batch256"),
    ("frames", "sample256_uniform"),
    ("frames", "sample256_prioritized"),
]


def op_name(kind: str, op: str) -> str:
    return f"{kind}.{op}"


def small_arrays(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.standard_normal((n, 4)).astype(np.float32),
        "action": rng.integers(0, 4, n).astype(np.int64),
        "reward": rng.standard_normal(n).astype(np.float32),
        "done": rng.random(n) < 0.01,
    }


def frame_pool(seed: int = 0) -> np.ndarray:
    """[FRAME_POOL + STACK + 1, H, W] uint8 random frames; item t uses frames t .. t + STACK (mod the pool)."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (FRAME_POOL + STACK + 1, H, W), dtype=np.uint8)


def frame_item_views(pool: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
    """obs and next_obs stacks of the item at stream position t (views into the pool, no copy)."""
    p = t % FRAME_POOL
    return pool[p : p + STACK], pool[p + 1 : p + 1 + STACK]


def frame_batch(pool: np.ndarray, t0: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """obs and next_obs [n, STACK, H, W] of items t0 .. t0 + n - 1 (copies)."""
    p = (t0 + np.arange(n)) % FRAME_POOL
    idx = p[:, None] + np.arange(STACK + 1)[None, :]
    frames = pool[idx]  # [n, STACK + 1, H, W]
    return np.ascontiguousarray(frames[:, :STACK]), np.ascontiguousarray(frames[:, 1:])


def rate(
    call: Callable[[], object],
    items_per_call: int,
    budget_s: float,
    min_calls: int = 3,
    warmup: int = 2,
    finish: Callable[[], object] | None = None,
    max_calls: int | None = None,
) -> dict[str, float]:
    """Items per second of ``call`` over about ``budget_s`` seconds (after ``warmup`` untimed calls).
    ``finish`` (e.g. a writer flush) runs inside the timed span, once, at the end."""
    for _ in range(warmup):
        call()
    if finish is not None:
        finish()
    calls = 0
    start = time.perf_counter()
    deadline = start + budget_s
    while True:
        call()
        calls += 1
        if calls >= min_calls and (time.perf_counter() >= deadline or calls == max_calls):
            break
    if finish is not None:
        finish()
    elapsed = time.perf_counter() - start
    return {
        "items_per_s": calls * items_per_call / elapsed,
        "calls": calls,
        "seconds": elapsed,
        "us_per_call": 1e6 * elapsed / calls,
    }


def machine() -> dict[str, object]:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def emit(payload: dict) -> None:
    """The last stdout line of a benchmark process: one JSON object."""
    sys.stdout.flush()
    print("RESULT " + json.dumps(payload), flush=True)


def median(xs: list[float]) -> float:
    return statistics.median(xs)
