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
