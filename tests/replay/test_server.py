"""The table server: the Table API through TableClient in other processes, blocking, faults and clean shutdown.

Servers and children use ``fork`` for speed (they call ``torch.set_num_threads(1)`` first, as a forked child of a
process that used torch must); one test covers ``spawn`` for both the server and a client process.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import signal
import threading
import time

import numpy as np
import pytest
import torch
from tensordict import TensorDict

from lightning_accelrl.replay import Table, TableClient, TableServer, rate_limiters, selectors
from lightning_accelrl.replay.storage import TensorStorage

FORK = mp.get_context("fork")
SLACK = 1.0  # seconds a timed call may overrun its timeout on two busy cores (scheduling delay, not logic)


def make(n: int, start: int = 0) -> TensorDict:
    x = torch.arange(start, start + n, dtype=torch.float32)
    return TensorDict(
        {
            "x": x,
            "obs": x[:, None].expand(n, 3).clone(),
            "next": {"obs": (x + 1)[:, None].expand(n, 3).clone()},
        },
        [n],
    )


def serve(factory, start_method: str = "fork") -> TableServer:
    return TableServer(factory, start_method=start_method).start()


def children_of(pid: int) -> list[int]:
    """Live child processes, not counting multiprocessing's own helpers (resource tracker, fork server)."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{entry}/cmdline") as f:
                    cmdline = f.read()
            except OSError:
                continue
            helper = "resource_tracker" in cmdline or "forkserver" in cmdline
            if int(fields[1]) == pid and fields[0] != "Z" and not helper:
                out.append(int(entry))
    return out


def gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def wait_until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.005)


# -- semantics equal the in-process table ---------------------------------------------------------------------------
def script(t) -> list:
    """A deterministic program over the Table API; returns everything observable."""
    out = []
    out.append(t.insert(make(4), priority=[1.0, 5.0, 3.0, 2.0]).tolist())
    s = t.sample(3)
    out.append(
        {k: s[k].tolist() for k in ("x", "key", "priority", "probability", "times_sampled", "table_size")}
    )
    out.append(s["next", "obs"].tolist())
    t.update_priorities(torch.tensor([0, 2, 99]), torch.tensor([9.0, 0.5, 7.0]))  # 99 unknown: ignored
    s = t.sample(2)
    out.append((s["key"].tolist(), s["priority"].tolist(), s["times_sampled"].tolist()))
    fresh = t.insert(make(1, 20))  # no priority given: the largest so far (9.0, from the update)
    s = t.sample(1)
    assert (s["key"].tolist(), s["priority"].tolist()) == (fresh.tolist(), [9.0])
    with pytest.raises(ValueError):
        t.update_priorities([1], [-1.0])
    with pytest.raises(ValueError):
        t.insert(make(1), priority=float("nan"))
    with pytest.raises(ValueError, match="fields"):
        t.insert(TensorDict({"y": torch.zeros(2)}, [2]))
    out.append(t.delete([1, 1, 1000]))
    out.append((t.size, len(t)))
    info = t.info()
    out.append({k: info[k] for k in ("size", "inserts", "samples", "deletes", "next_key")})
    t.reset()
    out.append((t.size, t.info()["inserts"], t.insert(make(1, 10)).tolist()))
    return out


def heap_table() -> Table:
    return Table(
        "heap", selectors.MaxHeap(), selectors.Fifo(), 10, rate_limiters.MinSize(1), max_times_sampled=2
    )


def test_client_matches_in_process_table():
    expected = script(heap_table())
    with serve(heap_table) as server:
        client = server.client()
        assert script(client) == expected
        assert client.name == "heap" and client.max_size == 10
        assert server.pid in children_of(os.getpid())
    assert not children_of(os.getpid())


def test_queue_order_and_max_times_sampled():
    with serve(functools.partial(Table.queue, "q", 3)) as server:
        c = server.client()
        c.insert(make(3))
        with pytest.raises(TimeoutError, match="0 of 1"):
            c.insert(make(1, 3), timeout=0)
        assert [c.sample(1)["x"].item() for _ in range(3)] == [0.0, 1.0, 2.0]
        assert c.size == 0
    fifo2 = functools.partial(
        Table, "f", selectors.Fifo(), selectors.Fifo(), 10, rate_limiters.MinSize(1), max_times_sampled=2
    )
    with serve(fifo2) as server:
        c = server.client()
        c.insert(make(2))
        s = c.sample(4)  # A, A, B, B in one call, then the table is empty
        assert s["x"].tolist() == [0.0, 0.0, 1.0, 1.0] and s["times_sampled"].tolist() == [1, 2, 1, 2]
        assert c.size == 0 and c.info()["deletes"] == 2


def test_buffers_grow_and_other_storages_work():
    """Batches larger than the shared buffers re-allocate them; a storage other than a plain TensorStorage (no
    direct gather) gives the same results."""

    class MyStorage(TensorStorage):
        pass

    for storage in (None, MyStorage(20)):
        factory = functools.partial(
            Table, "g", selectors.Fifo(), selectors.Fifo(), 20, rate_limiters.MinSize(1), storage=storage
        )
        with serve(factory) as server:
            c = server.client()
            for n, start in ((1, 0), (3, 1), (10, 4)):
                assert c.insert(make(n, start)).tolist() == list(range(start, start + n))
            for n in (1, 2, 7):
                s = c.sample(n)
                assert s.batch_size == (n,) and s["x"].tolist() == [0.0] * n
                assert s["next", "obs"].tolist() == [[1.0] * 3] * n
            first = c.sample(2)
            second = c.sample(2)
            first_copy = first.clone()
            assert (first == first_copy).all() and second is not first  # results are the caller's own


def test_table_object_checkpoint_and_factory_errors(tmp_path):
    t = Table.queue("obj", 5)
    t.insert(make(2))
    with TableServer(t, start_method="fork") as server:
        assert server.client().sample(2)["x"].tolist() == [0.0, 1.0]
        assert server.client().checkpoint(tmp_path / "c.ckpt") == str(tmp_path / "c.ckpt")
    assert len(t) == 2  # the server had its own copy
    assert Table.restore(tmp_path / "c.ckpt").info()["samples"] == 2

    def bad():
        raise RuntimeError("no table today")

    with pytest.raises(RuntimeError, match="no table today"):
        TableServer(bad, start_method="fork").start()
    with pytest.raises(TypeError, match="Table"):
        TableServer(42)  # type: ignore[arg-type]


# -- blocking and timeouts ------------------------------------------------------------------------------------------
def test_timeouts_raise_within_the_deadline():
    with serve(functools.partial(Table.queue, "q", 2)) as server:
        c = server.client()
        for timeout in (0.0, 0.05, 0.3):
            t0 = time.monotonic()
            with pytest.raises(TimeoutError, match="nothing was sampled"):
                c.sample(1, timeout=timeout)
            assert timeout <= time.monotonic() - t0 < timeout + SLACK
        c.insert(make(2))
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match="1 of 3") as info:
            c.sample(1)
            c.insert(make(3, 2), timeout=0.2)  # one fits (after the sample), two do not
        assert info.value.num_inserted == 1 and info.value.keys.tolist() == [2]
        assert 0.2 <= time.monotonic() - t0 < 0.2 + SLACK
        with pytest.raises(ValueError, match="timeout"):
            c.sample(1, timeout=-1)
        with pytest.raises(ValueError, match="never be admitted"):
            c.sample(5)
        assert c.info()["waiting_samples"] == 0 and c.info()["sample_blocked_s"] > 0.3


def test_blocked_call_does_not_stall_the_server_and_wakes_on_insert():
    """A sample blocked in one thread (its own connection) leaves the server free for other calls, and wakes
    when another thread's insert enables it."""
    with serve(functools.partial(Table.queue, "q", 4)) as server:
        c = server.client()
        result: dict = {}
        waiter = threading.Thread(target=lambda: result.update(s=c.sample(2)), daemon=True)
        waiter.start()
        wait_until(lambda: c.info()["waiting_samples"] == 1)
        assert c.info()["clients"] == 2  # one connection per thread
        c.insert(make(1))
        time.sleep(0.05)
        assert "s" not in result  # one item is not enough for sample(2)
        t0 = time.monotonic()
        c.insert(make(1, 1))
        waiter.join(5)
        assert result["s"]["x"].tolist() == [0.0, 1.0] and time.monotonic() - t0 < 1.0


# -- processes: producer and consumer under a ratio band ------------------------------------------------------------
def _producer(
    client: TableClient, start: int, n: int, batch: int, out_path: str, timeout: float = 5.0
) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(start)
    keys, xs, overrun = [], [], 0.0
    i = start
    while i < start + n:
        k = min(int(rng.integers(1, batch + 1)), start + n - i)
        t0 = time.monotonic()
        try:
            got = client.insert(make(k, i), timeout=timeout)
        except TimeoutError as err:
            got = err.keys
            overrun = max(overrun, time.monotonic() - t0 - timeout)
        overrun = max(overrun, time.monotonic() - t0 - timeout)
        keys += got.tolist()
        xs += list(range(i, i + len(got)))
        i += len(got)
    np.save(out_path, np.array([keys, xs, [overrun] * len(keys)], dtype=np.float64))


def _consumer(
    client: TableClient, total_inserts: int, batch: int, out_path: str, timeout: float = 0.3
) -> None:
    torch.set_num_threads(1)
    keys, xs, overrun = [], [], 0.0
    sizes = [batch, 1] if batch > 1 else [1]
    while True:
        for k in sizes:
            t0 = time.monotonic()
            try:
                s = client.sample(k, timeout=timeout)
            except TimeoutError:
                overrun = max(overrun, time.monotonic() - t0 - timeout)
                continue
            overrun = max(overrun, time.monotonic() - t0 - timeout)
            keys += s["key"].tolist()
            xs += s["x"].tolist()
            assert (s["obs"] == s["x"][:, None]).all() and (s["next", "obs"] == s["x"][:, None] + 1).all()
            break
        else:
            if client.info()["inserts"] >= total_inserts:
                break
    np.save(out_path, np.array([keys, xs, [overrun] * len(keys)], dtype=np.float64))


def _start(target, *args, daemon: bool = True) -> mp.Process:
    p = FORK.Process(target=target, args=args, daemon=daemon)
    p.start()
    return p


def _band_ok(info: dict) -> None:
    lim = info["rate_limiter"]
    diff = lim["inserts"] * lim["samples_per_insert"] - lim["samples"]
    filling = lim["inserts"] - lim["deletes"] <= lim["min_size_to_sample"]
    assert filling or diff <= lim["max_diff"], info
    assert lim["samples"] == 0 or diff >= lim["min_diff"], info
    assert info["size"] <= info["max_size"]


def test_sample_to_insert_ratio_band_holds_across_processes(tmp_path):
    """Worked-example limiter (spi 2, min size 4, error buffer 3 → band [5, 11]) with a producer process and a
    consumer process: the band holds at every observation and exactly 2·N − 5 samples come out."""
    n = 150
    factory = functools.partial(
        Table,
        "r",
        selectors.Uniform(),
        selectors.Fifo(),
        1000,
        rate_limiters.SampleToInsertRatio(2, 4, 3),
        seed=0,
    )
    with serve(factory) as server:
        c = server.client()
        procs = [
            _start(_producer, c, 0, n, 1, str(tmp_path / "p.npy")),
            _start(_consumer, c, n, 1, str(tmp_path / "c.npy")),
        ]
        observations = 0
        while any(p.is_alive() for p in procs):
            _band_ok(c.info())
            observations += 1
        for p in procs:
            p.join(10)
            assert p.exitcode == 0
        info = c.info()
        assert (info["inserts"], info["samples"]) == (n, 2 * n - 5) and observations > 5
        assert np.load(tmp_path / "c.npy")[2].max() < SLACK


def test_stress_many_producers_and_consumers(tmp_path):
    """3 producers and 2 consumers over max_times_sampled=3: every item is sampled exactly 3 times with its own
    data, the limiter band holds at every observation, no call overruns its timeout, and afterwards no child
    process and no /dev/shm entry is left."""
    shm_before = set(os.listdir("/dev/shm"))
    per_producer, producers, consumers, mts = 200, 3, 2, 3
    total = per_producer * producers
    factory = functools.partial(
        Table,
        "stress",
        selectors.Uniform(),
        selectors.Fifo(),
        64,
        rate_limiters.SampleToInsertRatio(mts, 1, (0, 60)),
        max_times_sampled=mts,
    )
    server = serve(factory)
    c = server.client()
    procs = [
        _start(_producer, c, 10_000 * i, per_producer, 4, str(tmp_path / f"p{i}.npy"))
        for i in range(producers)
    ]
    procs += [_start(_consumer, c, total, 4, str(tmp_path / f"c{i}.npy")) for i in range(consumers)]
    while any(p.is_alive() for p in procs):
        _band_ok(c.info())
        time.sleep(0.002)
    for p in procs:
        p.join(10)
        assert p.exitcode == 0
    info = c.info()
    assert (info["inserts"], info["samples"], info["deletes"], info["size"]) == (total, mts * total, total, 0)
    inserted = np.concatenate([np.load(tmp_path / f"p{i}.npy") for i in range(producers)], axis=1)
    sampled = np.concatenate([np.load(tmp_path / f"c{i}.npy") for i in range(consumers)], axis=1)
    x_of = dict(zip(inserted[0].astype(int).tolist(), inserted[1].tolist()))
    assert len(x_of) == total  # unique keys, none lost
    keys, counts = np.unique(sampled[0].astype(int), return_counts=True)
    assert (
        set(keys.tolist()) == set(x_of) and (counts == mts).all()
    )  # every item exactly max_times_sampled times
    assert all(x_of[int(k)] == x for k, x in zip(sampled[0], sampled[1]))  # each sample carries its own item
    assert max(inserted[2].max(), sampled[2].max()) < SLACK  # no call blocked past its timeout
    server.stop()
    assert not children_of(os.getpid()) and not mp.active_children()
    # We create no multiprocessing semaphores; "sem.mp-*" entries come from other jobs on a shared machine.
    assert {e for e in set(os.listdir("/dev/shm")) - shm_before if not e.startswith("sem.mp-")} == set()


# -- faults ---------------------------------------------------------------------------------------------------------
def _insert_forever(client: TableClient, start: int) -> None:
    torch.set_num_threads(1)
    i = start
    while True:
        client.insert(make(1, i), timeout=5)
        i += 1
        time.sleep(0.001)


def _sample_blocked(client: TableClient) -> None:
    torch.set_num_threads(1)
    client.sample(1, timeout=None)


def test_killed_producer_and_blocked_consumer_do_not_affect_others():
    factory = functools.partial(
        Table, "k", selectors.Uniform(), selectors.Fifo(), 2000, rate_limiters.MinSize(1)
    )
    with serve(factory) as server:
        c = server.client()
        victim, survivor = _start(_insert_forever, c, 0), _start(_insert_forever, c, 1_000_000)
        wait_until(lambda: c.info()["clients"] == 3 and c.info()["inserts"] > 20)
        os.kill(victim.pid, signal.SIGKILL)
        wait_until(lambda: c.info()["clients"] == 2, timeout=3)
        before = c.info()["inserts"]
        wait_until(lambda: c.info()["inserts"] > before + 20)  # the survivor goes on
        assert c.sample(16)["x"].shape == (16,)
        os.kill(survivor.pid, signal.SIGKILL)
        for p in (victim, survivor):
            p.join(5)
    with serve(
        functools.partial(Table.queue, "q", 4)
    ) as server:  # a consumer killed while parked in the server
        c = server.client()
        blocked = _start(_sample_blocked, c)
        wait_until(lambda: c.info()["waiting_samples"] == 1)
        os.kill(blocked.pid, signal.SIGKILL)
        wait_until(lambda: c.info()["waiting_samples"] == 0 and c.info()["clients"] == 1, timeout=3)
        c.insert(make(1))
        assert c.sample(1, timeout=1)["x"].tolist() == [0.0]  # the dead consumer's request took nothing
        blocked.join(5)


def _fork_a_sleeper_then_wait(client: TableClient, pid_path: str) -> None:
    torch.set_num_threads(1)
    client.insert(make(1))  # connected
    sleeper = os.fork()  # inherits our socket, and must close it
    if sleeper == 0:
        time.sleep(30)
        os._exit(0)
    with open(pid_path, "w") as f:
        f.write(str(sleeper))
    time.sleep(30)


def test_forked_child_does_not_keep_a_dead_clients_connection(tmp_path):
    """A client process forks a child and is killed: the server drops its connection at once, although the child
    (which inherited the socket) lives on."""
    with serve(functools.partial(Table.queue, "q", 10)) as server:
        c = server.client()
        base = c.info()["clients"]
        parent = _start(_fork_a_sleeper_then_wait, c, str(tmp_path / "pid"))
        wait_until(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text() != "")
        wait_until(lambda: c.info()["clients"] == base + 1)
        sleeper = int((tmp_path / "pid").read_text())
        os.kill(parent.pid, signal.SIGKILL)
        t0 = time.monotonic()
        wait_until(lambda: c.info()["clients"] == base, timeout=3)
        assert time.monotonic() - t0 < 2.0 and not gone(
            sleeper
        )  # without the fix: until the sleeper exits (30 s)
        os.kill(sleeper, signal.SIGKILL)
        parent.join(5)


def _wait_for_server_death(client: TableClient, out_path: str) -> None:
    torch.set_num_threads(1)
    client.size  # noqa: B018  (connect)
    t0 = time.monotonic()
    try:
        client.sample(1, timeout=None)
        outcome = "sampled"
    except ConnectionError:
        outcome = "ConnectionError"
    with open(out_path, "w") as f:
        f.write(f"{outcome} {time.monotonic() - t0}")


def test_killed_server_makes_clients_fail_fast(tmp_path):
    server = serve(functools.partial(Table.queue, "q", 10))
    c = server.client()
    child = _start(_wait_for_server_death, c, str(tmp_path / "out"))
    result: dict = {}

    def blocked_here():
        try:
            c.sample(1, timeout=None)
        except ConnectionError as err:
            result["err"] = err

    waiter = threading.Thread(target=blocked_here, daemon=True)
    waiter.start()
    wait_until(lambda: c.info()["waiting_samples"] == 2)
    os.kill(server.pid, signal.SIGKILL)
    t0 = time.monotonic()
    waiter.join(5)
    child.join(5)
    assert time.monotonic() - t0 < 3.0
    assert "pid" in str(result["err"]) and child.exitcode == 0
    assert (tmp_path / "out").read_text().startswith("ConnectionError")
    for call in (lambda: c.size, lambda: c.insert(make(1)), lambda: c.sample(1, timeout=1)):
        t1 = time.monotonic()
        with pytest.raises(ConnectionError):
            call()
        assert time.monotonic() - t1 < 1.0
    server.stop()
    assert not children_of(os.getpid())


def _own_a_server(pid_path: str) -> None:
    torch.set_num_threads(1)
    server = TableServer(functools.partial(Table.queue, "q", 10), start_method="fork").start()
    with open(pid_path, "w") as f:
        f.write(str(server.pid))
    time.sleep(30)


def test_server_exits_when_its_owner_dies(tmp_path):
    owner = _start(_own_a_server, str(tmp_path / "pid"), daemon=False)  # daemons may not start processes
    wait_until(lambda: (tmp_path / "pid").exists() and (tmp_path / "pid").read_text() != "", timeout=10)
    server_pid = int((tmp_path / "pid").read_text())
    assert not gone(server_pid)
    os.kill(owner.pid, signal.SIGKILL)
    owner.join(5)
    wait_until(lambda: gone(server_pid), timeout=3)


# -- spawn ----------------------------------------------------------------------------------------------------------
def _spawned_producer(client: TableClient, n: int) -> None:
    torch.set_num_threads(1)
    client.insert(make(n, 100))


@pytest.mark.slow  # two interpreters start and import torch: ~10 s on two busy cores
def test_spawned_server_from_a_table_object_and_a_spawned_client_process():
    """spawn for both: the Table object reaches the server through a temporary checkpoint, the client by pickling."""
    t = Table.queue("q", 10)
    t.insert(make(1, 99))
    with TableServer(t, start_method="spawn") as server:
        c = server.client()
        p = mp.get_context("spawn").Process(target=_spawned_producer, args=(c, 3))
        p.start()
        s = c.sample(4, timeout=120)
        p.join(30)
        assert p.exitcode == 0 and s["x"].tolist() == [99.0, 100.0, 101.0, 102.0]
    assert not children_of(os.getpid())
