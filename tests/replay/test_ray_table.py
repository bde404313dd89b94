"""The table as a Ray actor: the Table API through RayTableClient, blocking, tasks as producer and consumer.

Skipped without Ray (``pip install -e '.[ray]'``). One ``ray.init`` for the module, bound to loopback, with a small
object store, started as the library starts it (``start_local_ray``); never ``ray stop``.
"""

from __future__ import annotations

import contextlib
import functools
import ipaddress
import math
import os
import sys
import threading
import time

import pytest
import torch
from tensordict import TensorDict

ray = pytest.importorskip("ray")

from ray_helpers import local_ray  # noqa: E402  (tests/ is on sys.path)
from test_server import SLACK, make, script  # noqa: E402  (tests/replay is on sys.path)

from lightning_accelrl.replay import Table, rate_limiters, selectors  # noqa: E402
from lightning_accelrl.replay.ray_table import RayTable, RayTableClient  # noqa: E402

HEAP = functools.partial(  # what test_server.heap_table builds, as a partial that Ray workers can unpickle
    Table, "heap", selectors.MaxHeap(), selectors.Fifo(), 10, rate_limiters.MinSize(1), max_times_sampled=2
)


@pytest.fixture(scope="module", autouse=True)
def ray_session():
    with local_ray(by_value=sys.modules[__name__]):  # workers cannot import this module's functions
        yield


NO_CPU = {"num_cpus": 0}  # table actors must not keep the producer and consumer tasks from being scheduled


def test_client_matches_in_process_table_and_named_actor():
    expected = script(HEAP())
    created = RayTable.create("heap", factory=HEAP, actor_name="accelrl-test-heap", actor_options=NO_CPU)
    client = RayTable.connect("accelrl-test-heap")  # found by name, as another driver would
    assert isinstance(client, RayTableClient) and client.name == "heap" and client.max_size == 10
    assert script(client) == expected
    created.kill()


def test_queue_order_timeouts_and_errors():
    c = RayTable.queue("q", 2, actor_options=NO_CPU)
    for timeout in (0.0, 0.3):
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="nothing was sampled"):
            c.sample(1, timeout=timeout)
        assert timeout <= time.monotonic() - t0 < timeout + SLACK
    assert c.insert(make(2)).tolist() == [0, 1]
    c.sample(1)
    t0 = time.monotonic()
    with pytest.raises(TimeoutError, match="1 of 3") as info:
        c.insert(make(3, 2), timeout=0.2)
    assert info.value.num_inserted == 1 and info.value.keys.tolist() == [2]
    assert 0.2 <= time.monotonic() - t0 < 0.2 + SLACK
    assert [c.sample(1)["x"].item() for _ in range(2)] == [1.0, 2.0]
    with pytest.raises(ValueError, match="never be admitted"):
        c.sample(5)
    with pytest.raises(ValueError, match="timeout"):
        c.insert(make(1), timeout=-1)
    info = c.info()
    assert (info["inserts"], info["samples"], info["sample_blocked_s"] > 0.25) == (3, 3, True)
    c.kill()
    with pytest.raises(ConnectionError, match="gone"):
        c.size  # noqa: B018


def test_blocked_sample_wakes_on_insert_with_frame_stacks():
    """A sample blocked in the actor leaves it serving other calls and wakes on the insert that enables it;
    84x84x4 frame stacks (through the object store, not inlined) arrive intact."""
    c = RayTable.create(
        "frames", selectors.Fifo(), selectors.Fifo(), 100, rate_limiters.MinSize(33), actor_options=NO_CPU
    )
    obs = torch.randint(0, 255, (33, 4, 84, 84), dtype=torch.uint8)
    items = TensorDict({"obs": obs, "i": torch.arange(33)}, [33])
    result: dict = {}
    waiter = threading.Thread(target=lambda: result.update(s=c.sample(64)), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 5
    while c.info()["waiting_samples"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    c.insert(items[:32])
    assert c.size == 32 and "s" not in result  # served while the sample waits
    c.insert(items[32:])
    waiter.join(5)
    s = result["s"]
    assert torch.equal(s["obs"], obs[:1].expand(64, 4, 84, 84)) and s["key"].tolist() == [0] * 64
    c.kill()


@ray.remote(num_cpus=1)
def _produce(client: RayTableClient, n: int) -> int:
    torch.set_num_threads(1)
    for i in range(n):
        client.insert(TensorDict({"x": torch.tensor([float(i)])}, [1]), timeout=10)
    return n


@pytest.mark.slow  # a Ray worker starts and imports torch: ~10 s on two busy cores
def test_producer_task_and_consumer_hold_the_ratio():
    """SampleToInsertRatio(2, 4, 3) (band [5, 11]) between a producer task (a Ray worker process) and a consumer
    (this process): the band holds at every observation and exactly 2·N − 5 samples come out."""
    n = 60
    c = RayTable.create(
        "r",
        selectors.Uniform(),
        selectors.Fifo(),
        1000,
        rate_limiters.SampleToInsertRatio(2, 4, 3),
        actor_options=NO_CPU,
    )
    producer = _produce.remote(c, n)
    keys: list[int] = []
    consumer = threading.Thread(
        target=lambda: keys.extend(int(c.sample(1, timeout=30)["key"]) for _ in range(2 * n - 5)), daemon=True
    )
    consumer.start()
    while consumer.is_alive():
        info = c.info()
        lim = info["rate_limiter"]
        diff = 2 * lim["inserts"] - lim["samples"]
        assert lim["inserts"] <= 4 or diff <= 11, info
        assert lim["samples"] == 0 or diff >= 5, info
        time.sleep(0.01)
    assert ray.get(producer) == n and len(keys) == 2 * n - 5
    info = c.info()
    assert (info["inserts"], info["samples"]) == (n, 2 * n - 5)
    c.kill()


def _listening(pids: set[int]) -> list[tuple[int, ipaddress._BaseAddress, int]]:
    """(pid, address, port) of every listening TCP socket of these processes, from /proc."""
    owner: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        owner[link[8:-1]] = pid
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                parts = line.split()
                if parts[3] != "0A" or parts[9] not in owner:  # 0A: LISTEN
                    continue
                host, port = parts[1].split(":")
                raw = bytes.fromhex(host)
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian words
                out.append((owner[parts[9]], ipaddress.ip_address(raw), int(port, 16)))
    return out


def _ray_pids() -> set[int]:
    """This process and every process started with this Ray's token in its environment."""
    token = f"RAY_AUTH_TOKEN={os.environ['RAY_AUTH_TOKEN']}".encode()
    pids = {os.getpid()}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/environ", "rb") as f:
                if token in f.read().split(b"\0"):
                    pids.add(int(entry))
    return pids


def _loopback(address: ipaddress._BaseAddress) -> bool:
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ray_started_by_the_library_listens_on_loopback_only():
    client = RayTable.queue("q", 2, actor_options=NO_CPU)  # a worker process too
    assert client.size == 0
    pids = _ray_pids()
    assert len(pids) >= 3  # driver, gcs_server, raylet, workers...
    sockets = _listening(pids)
    assert sockets, "no listening socket found"
    assert [s for s in sockets if not _loopback(s[1])] == []
    assert os.environ["RAY_AUTH_MODE"] == "token"
    client.kill()


def test_ray_client_rejects_bad_timeouts_counts_and_keys():
    c = RayTable.create(
        "u", selectors.Uniform(), selectors.Fifo(), 10, rate_limiters.MinSize(1), actor_options=NO_CPU
    )
    c.insert(make(3))
    for timeout in (math.nan, -1.0):
        with pytest.raises(ValueError, match="timeout must be None"):
            c.sample(1, timeout=timeout)
    with pytest.raises(ValueError, match="num_samples must be an integer"):
        c.sample(2.7)
    with pytest.raises(ValueError, match="keys must be integers"):
        c.update_priorities([1.9], [1.0])
    assert c.sample(1, timeout=math.inf)["x"].numel() == 1  # inf: wait as long as it takes
    c.kill()


def _threads(fn, count: int, *args) -> list:
    out: list = [None] * count
    workers = [threading.Thread(target=lambda i=i: out.__setitem__(i, fn(i, *args))) for i in range(count)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return out


def _produce_items(i: int, table: RayTableClient, start: int, n: int) -> tuple[list, list, float]:
    keys, xs, overrun, x = [], [], 0.0, start + 1000 * i
    while x < start + 1000 * i + n:
        t0 = time.monotonic()
        try:
            got = table.insert(TensorDict({"x": torch.tensor([float(x)])}, [1]), timeout=10.0).tolist()
        except TimeoutError as err:
            got = err.keys.tolist()
        overrun = max(overrun, time.monotonic() - t0 - 10.0)
        keys += got
        xs += [x] * len(got)
        x += len(got)
    return keys, xs, overrun


def _consume_items(i: int, table: RayTableClient, total: int) -> tuple[list, list, float]:
    keys, xs, overrun = [], [], 0.0
    while True:
        t0 = time.monotonic()
        try:
            batch = table.sample(1 + i % 2, timeout=0.5)
        except TimeoutError:
            overrun = max(overrun, time.monotonic() - t0 - 0.5)
            if table.info()["inserts"] >= total:
                return keys, xs, overrun
            continue
        overrun = max(overrun, time.monotonic() - t0 - 0.5)
        keys += batch["key"].tolist()
        xs += batch["x"].tolist()


@ray.remote(num_cpus=0)
def _client_task(role: str, table: RayTableClient, index: int, threads: int, n: int, total: int) -> list:
    torch.set_num_threads(1)
    if role == "producer":
        return _threads(_produce_items, threads, table, 100_000 * index, n)
    return _threads(_consume_items, threads, table, total)


@pytest.mark.slow  # 8 Ray workers start and import torch: ~40 s on two busy cores
def test_64_concurrent_clients_on_one_ray_table():
    """8 Ray worker processes x 8 threads: 32 producers and 32 consumers under a sample-to-insert band; every item
    comes out exactly max_times_sampled times with its own data and no call overruns its timeout."""
    tasks, threads, per_thread, mts = 4, 8, 10, 3
    total = tasks * threads * per_thread
    table = RayTable.create(
        "s64",
        selectors.Uniform(),
        selectors.Fifo(),
        128,
        rate_limiters.SampleToInsertRatio(mts, 1, (0, 100)),
        max_times_sampled=mts,
        actor_options=NO_CPU,
    )
    refs = [_client_task.remote("producer", table, i, threads, per_thread, total) for i in range(tasks)]
    refs += [_client_task.remote("consumer", table, i, threads, 0, total) for i in range(tasks)]
    results = [r for ref in ray.get(refs, timeout=300) for r in ref]
    produced, consumed = results[: tasks * threads], results[tasks * threads :]
    x_of = {k: x for keys, xs, _ in produced for k, x in zip(keys, xs)}
    assert len(x_of) == total
    sampled = [(k, x) for keys, xs, _ in consumed for k, x in zip(keys, xs)]
    counts: dict[int, int] = {}
    for k, x in sampled:
        assert x_of[k] == x  # each sample carries its own item
        counts[k] = counts.get(k, 0) + 1
    assert set(counts) == set(x_of) and set(counts.values()) == {mts}
    info = table.info()
    assert (info["inserts"], info["samples"], info["size"]) == (total, mts * total, 0)
    assert max(o for _, _, o in results) < 3.0  # scheduling slack on two busy cores
    table.kill()
