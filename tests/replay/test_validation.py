"""Every replay call terminates and says what is wrong, in-process and served alike: NaN, negative and infinite
timeouts, non-integer counts and keys, priorities a sum tree cannot hold."""

from __future__ import annotations

import math
import sys
import threading
import time

import pytest
import torch
from tensordict import TensorDict

from lightning_accelrl.replay import Table, TableServer, rate_limiters, selectors


def _uniform() -> Table:
    return Table("u", selectors.Uniform(), selectors.Fifo(), 10, rate_limiters.MinSize(1))


def _prioritized() -> Table:
    return Table("p", selectors.Prioritized(2.0), selectors.Fifo(), 10, rate_limiters.MinSize(1))


def _items(n: int) -> TensorDict:
    return TensorDict({"x": torch.arange(float(n))}, [n])


@pytest.fixture(params=["table", "client"])
def tables(request):
    """(uniform, prioritized) tables, in-process or each served by its own server."""
    if request.param == "table":
        yield _uniform(), _prioritized()
        return
    with TableServer(_uniform, start_method="fork") as a, TableServer(_prioritized, start_method="fork") as b:
        yield a.client(), b.client()


@pytest.mark.parametrize("timeout", [math.nan, -1.0, -math.inf, "1", True])
def test_bad_timeouts_are_refused_at_once(tables, timeout):
    table, _ = tables
    start = time.monotonic()
    with pytest.raises(ValueError, match="timeout must be None or a number of seconds >= 0"):
        table.sample(1, timeout=timeout)
    with pytest.raises(ValueError, match="timeout must be None or a number of seconds >= 0"):
        table.insert(_items(1), timeout=timeout)
    assert time.monotonic() - start < 1.0


def test_infinite_timeout_waits_like_none(tables):
    table, _ = tables
    timer = threading.Timer(0.3, lambda: table.insert(_items(1)))
    timer.start()
    try:
        batch = table.sample(1, timeout=math.inf)  # blocks until the insert (OverflowError before)
    finally:
        timer.join()
    assert batch["x"].tolist() == [0.0]


@pytest.mark.parametrize("n", [2.7, 2.0, True, "2", 0, -1])
def test_non_integer_or_non_positive_counts_are_refused(tables, n):
    table, _ = tables
    table.insert(_items(3))
    with pytest.raises(ValueError, match="num_samples must be an integer >= 1"):
        table.sample(n, timeout=0)


@pytest.mark.parametrize("keys", [[1.9], torch.tensor([1.0]), [True]])
def test_non_integer_keys_are_refused(tables, keys):
    table, _ = tables
    table.insert(_items(3))
    with pytest.raises(ValueError, match="keys must be integers"):
        table.update_priorities(keys, [1.0])
    with pytest.raises(ValueError, match="keys must be integers"):
        table.delete(keys)
    assert table.size == 3


def test_priorities_a_sum_tree_cannot_hold_are_refused(tables):
    _, table = tables  # Prioritized(2.0), 10 items (11 slots with the eviction scratch)
    limit = math.sqrt(sys.float_info.max / 11)
    table.insert(_items(1), priority=limit * 0.999)  # p ** 2 and the sum of 11 of them stay finite
    for bad in (1e200, limit * 1.01, math.inf, math.nan, -1.0):
        with pytest.raises(ValueError, match="priorities must be >= 0"):
            table.insert(_items(1), priority=bad)
        with pytest.raises(ValueError, match="priorities must be >= 0"):
            table.update_priorities([0], [bad])
    for _ in range(9):
        table.insert(_items(1), priority=limit * 0.999)
    batch = table.sample(64, timeout=1)
    assert torch.isfinite(batch["probability"]).all() and (batch["probability"] > 0).all()
    assert table.size == 10


def test_uniform_tables_accept_infinite_priorities(tables):
    table, _ = tables
    table.insert(_items(1), priority=math.inf)
    assert table.sample(1, timeout=1)["priority"].tolist() == [math.inf]
