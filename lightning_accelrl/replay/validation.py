"""Checks of the arguments every table API takes (Table, TableClient, RayTableClient): each says what is wrong."""

from __future__ import annotations

import math
import operator
from typing import Any

import numpy as np
import torch

__all__ = ["as_keys", "check_count", "check_priorities", "check_timeout"]


def check_timeout(timeout: Any) -> float | None:
    """``None`` or ``inf``: wait for ever (``None``); else a number of seconds >= 0. NaN, negative and non-numbers
    are a ValueError."""
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float, np.integer, np.floating)):
        raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
    value = float(timeout)
    if math.isnan(value) or value < 0:
        raise ValueError(f"timeout must be None or a number of seconds >= 0, got {timeout!r}")
    return None if value == math.inf else value


def check_count(n: Any, what: str = "num_samples") -> int:
    """A positive integer count; a float (``2.7``), a bool or ``< 1`` is a ValueError."""
    if isinstance(n, (bool, np.bool_)):
        raise ValueError(f"{what} must be an integer >= 1, got {n!r}")
    try:
        value = operator.index(n)
    except TypeError:
        raise ValueError(f"{what} must be an integer >= 1, got {n!r}") from None
    if value < 1:
        raise ValueError(f"{what} must be an integer >= 1, got {n!r}")
    return value


def as_keys(keys: Any) -> np.ndarray:
    """Item keys as a flat int64 array; keys of a non-integer type (``[1.9]``, floats, bools) are a ValueError."""
    if isinstance(keys, torch.Tensor):
        keys = keys.detach().cpu().numpy()
    arr = np.asarray(keys)
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"keys must be integers (the int64 keys insert returned), got {arr.dtype} values")
    return arr.astype(np.int64, copy=False).reshape(-1)


def check_priorities(priority: Any, n: int, max_priority: float = math.inf) -> np.ndarray:
    """``n`` priorities (one number for all, or one each) as float64; each must be >= 0 and <= ``max_priority``
    (a selector's bound; NaN is refused)."""
    if isinstance(priority, (int, float)):
        value = float(priority)
        if 0 <= value <= max_priority:  # NaN fails
            return np.full(n, value)
        p = np.array([value])
    else:
        if isinstance(priority, torch.Tensor):
            priority = priority.detach().cpu().numpy()
        p = np.asarray(priority, dtype=np.float64).reshape(-1)
        if p.size == 1 and n != 1:
            p = np.full(n, p[0])
        elif p.size != n:
            raise ValueError(f"got {p.size} priorities for {n} items")
    bad = ~((p >= 0) & (p <= max_priority))
    if bad.any():
        limit = (
            ""
            if max_priority == math.inf
            else (f" and <= {max_priority:.6g} (so that p ** priority_exponent and their sum stay finite)")
        )
        raise ValueError(f"priorities must be >= 0{limit}, got {p[bad][:5].tolist()}")
    return p
