"""Blocking on the rate limiter: the worked example with a consumer thread, queues, timeouts, threads."""

from __future__ import annotations

import threading
import time

import pytest
import torch
from tensordict import TensorDict

from lightning_accelrl.replay import Table, rate_limiters, selectors


def make(n: int, start: int = 0) -> TensorDict:
    return TensorDict({"x": torch.arange(start, start + n, dtype=torch.float32)}, [n])


def start_thread(fn, *args) -> tuple[threading.Thread, dict]:
    result: dict = {}

    def run():
        try:
            result["value"] = fn(*args)
        except BaseException as err:  # reported to the test thread
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, result


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


def test_worked_example_sample_to_insert_ratio_with_consumer_thread():
    """SampleToInsertRatio(2, 4, 3): 5 inserts pass, the 6th blocks; with 6 and 7 pending and a consumer, exactly
    9 samples come out, ending at I = 7, S = 9."""
    t = Table(
        "t", selectors.Uniform(), selectors.Fifo(), 100, rate_limiters.SampleToInsertRatio(2, 4, 3), seed=0
    )
    t.insert(make(5), timeout=0)  # inserts 1-5 need no sample
    with pytest.raises(TimeoutError, match="0 of 1"):
        t.insert(make(1, 5), timeout=0)
    producer, result = start_thread(t.insert, make(2, 5))  # inserts 6 and 7 pending
    wait_until(lambda: t.info()["waiting_inserts"] == 1)
    samples = 0
    while True:
        try:
            t.sample(1, timeout=0.3)
        except TimeoutError:
            break
        samples += 1
    producer.join(5)
    assert "error" not in result and result["value"].tolist() == [5, 6]
    info = t.info()
    assert samples == 9
    assert (info["inserts"], info["samples"]) == (7, 9)
    assert info["insert_blocked_s"] > 0 and info["sample_blocked_s"] >= 0.25


def test_queue_fourth_insert_blocks_until_a_sample_frees_room():
    t = Table.queue("q", 3)
    t.insert(make(3))
    producer, result = start_thread(t.insert, make(1, 3))
    wait_until(lambda: t.info()["waiting_inserts"] == 1)
    assert producer.is_alive() and len(t) == 3
    assert t.sample(1)["x"].tolist() == [0.0]
    producer.join(5)
    assert not producer.is_alive() and result["value"].tolist() == [3]
    assert [t.sample(1)["x"].item() for _ in range(3)] == [1.0, 2.0, 3.0]
    assert len(t) == 0
    with pytest.raises(ValueError, match="never be admitted"):
        t.sample(4)  # beyond the band [0, 3]


def test_stack_returns_newest_first():
    t = Table.stack("s", 3)
    t.insert(make(3))
    assert [t.sample(1)["x"].item() for _ in range(3)] == [2.0, 1.0, 0.0]


def test_blocked_sample_wakes_on_insert():
    t = Table("t", selectors.Fifo(), selectors.Fifo(), 10, rate_limiters.MinSize(2))
    consumer, result = start_thread(t.sample, 1)
    wait_until(lambda: t.info()["waiting_samples"] == 1)
    t.insert(make(1))
    assert consumer.is_alive()  # min size 2 not reached yet
    t.insert(make(1, 1))
    consumer.join(5)
    assert result["value"]["x"].tolist() == [0.0]


def test_timeout_zero_raises_at_once():
    t = Table.queue("q", 2)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="nothing was sampled"):
        t.sample(1, timeout=0)
    t.insert(make(2))
    with pytest.raises(TimeoutError):
        t.insert(make(1, 2), timeout=0)
    assert time.monotonic() - start < 0.5
    assert t.info()["samples"] == 0 and len(t) == 2


def test_small_timeouts_raise_within_bounded_time():
    t = Table.queue("q", 2)
    for call in (
        lambda: t.sample(1, timeout=0.05),
        lambda: (t.insert(make(2)), t.insert(make(1), timeout=0.05)),
    ):
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            call()
        elapsed = time.monotonic() - start
        assert 0.04 <= elapsed < 2.0


def test_partial_insert_keeps_admitted_items_and_says_how_many():
    t = Table.queue("q", 3)
    with pytest.raises(TimeoutError, match="3 of 5 items were inserted") as info:
        t.insert(make(5), timeout=0.02)
    assert info.value.num_inserted == 3 and info.value.keys.tolist() == [0, 1, 2]
    assert len(t) == 3
    assert [t.sample(1)["x"].item() for _ in range(3)] == [0.0, 1.0, 2.0]


def test_deadline_covers_the_whole_call():
    """A batch that needs several waits still fails at its one deadline."""
    t = Table.queue("q", 1)
    stop = threading.Event()

    def slow_consumer():
        while not stop.is_set():
            try:
                t.sample(1, timeout=0.05)
            except TimeoutError:
                continue
            time.sleep(0.03)

    consumer = threading.Thread(target=slow_consumer, daemon=True)
    consumer.start()
    start = time.monotonic()
    with pytest.raises(TimeoutError) as info:
        t.insert(make(100), timeout=0.2)
    elapsed = time.monotonic() - start
    stop.set()
    consumer.join(5)
    assert 0.15 < elapsed < 2.0
    assert 0 < info.value.num_inserted < 100


def test_sample_admitted_as_a_whole():
    """sample(n) waits until the limiter allows all n at once, then takes them together."""
    t = Table(
        "t", selectors.Uniform(), selectors.Fifo(), 100, rate_limiters.SampleToInsertRatio(1, 1, 10), seed=0
    )
    t.insert(make(5))  # I = 5: I * spi - S - n >= min_diff = -9 allows n <= 14 now
    consumer, result = start_thread(t.sample, 16)
    wait_until(lambda: t.info()["waiting_samples"] == 1)
    assert t.info()["samples"] == 0
    t.insert(make(2, 5))
    consumer.join(5)
    assert len(result["value"]) == 16 and t.info()["samples"] == 16
    with pytest.raises(ValueError, match="never be admitted"):
        t.sample(21)


def test_producer_and_consumer_threads_keep_counts_consistent():
    spi = 4
    t = Table(
        "t",
        selectors.Uniform(),
        selectors.Fifo(),
        200,
        rate_limiters.SampleToInsertRatio(spi, 10, 40),
        seed=0,
    )
    n_inserts, batch = 600, 8
    sampled = []
    violations = []

    def consumer():
        while True:
            try:
                out = t.sample(batch, timeout=0.2)
            except TimeoutError:
                return
            sampled.append(len(out))
            lim = t.rate_limiter
            diff = lim.inserts * spi - lim.samples
            if not (lim.min_diff - batch <= diff <= lim.max_diff + spi):
                violations.append(diff)

    def producer():
        for i in range(n_inserts):
            t.insert(make(1, i))

    threads = [threading.Thread(target=consumer, daemon=True), threading.Thread(target=producer, daemon=True)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    info = t.info()
    assert info["inserts"] == n_inserts and len(t) == 200 and info["deletes"] == n_inserts - 200
    assert info["samples"] == sum(sampled)
    # The consumer stops once the band forbids more samples: I * spi - S - n < min_diff.
    assert n_inserts * spi - info["samples"] - batch < t.rate_limiter.min_diff
    assert not violations
