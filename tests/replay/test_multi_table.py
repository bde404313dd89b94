"""Several named tables on one server: a prioritized replay table beside a FIFO queue, in a TableServer and in a
Ray table actor. Calls are routed by name, each table keeps its own limiter (a call blocked on one never holds up
the other), an unknown name is one line naming the tables, and a checkpoint of every table restores bit-identically.
"""

from __future__ import annotations

import functools
import io
import socket
import sys
import threading
import time

import msgpack
import pytest
import torch
from tensordict import TensorDict
from test_server import SLACK, make  # (tests/replay is on sys.path)

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.replay import Table, TableServer, rate_limiters, selectors
from lightning_accelrl.replay.serving import wire

REPLAY = functools.partial(
    Table, "replay", selectors.Prioritized(0.8), selectors.Fifo(), 50, rate_limiters.MinSize(2), seed=3
)
QUEUE = functools.partial(Table.queue, "queue", 4)


def rollout(n: int, start: int = 0) -> TensorDict:
    """Queue items: a layout of their own (so each table keeps its own shared buffers)."""
    r = torch.arange(start, start + n, dtype=torch.float64)
    return TensorDict({"reward": r, "done": (r % 2 == 0)}, [n])


def same(a, b) -> bool:
    """Equal trees, tensors equal bit for bit with the same dtype."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def fill(replay, queue) -> None:
    """The same history for any pair of clients: inserts, samples and a priority update on each table."""
    replay.insert(make(6), priority=[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    queue.insert(rollout(3))
    replay.sample(4)
    queue.sample(1)
    replay.update_priorities([0, 5], [9.0, 0.5])


def draws(replay, queue) -> list:
    """What a continuation observes: prioritized draws (the generator's state), the queue's order."""
    out = [replay.sample(5)[k].tolist() for k in ("key", "x", "priority", "times_sampled")]
    out += [queue.sample(1)["reward"].tolist() for _ in range(2)]
    return out


@pytest.fixture
def server():
    with TableServer([REPLAY, QUEUE], start_method="fork") as srv:
        yield srv


# -- TableServer ----------------------------------------------------------------------------------------------------
def test_inserts_and_samples_are_routed_by_name_over_one_connection(server):
    assert server.tables == ("replay", "queue") and server.name == "replay"
    replay = server.client()  # the first table is the default
    queue = replay.table("queue")
    assert (replay.name, replay.max_size, queue.name, queue.max_size) == ("replay", 50, "queue", 4)
    assert replay.insert(make(3)).tolist() == [0, 1, 2]
    assert queue.insert(rollout(2, 10)).tolist() == [0, 1]  # keys are per table
    assert (replay.size, queue.size, len(server.client("queue"))) == (3, 2, 2)
    batch = queue.sample(1)
    assert batch["reward"].tolist() == [10.0] and "x" not in batch
    batch = replay.sample(8)
    assert set(batch["x"].tolist()) <= {0.0, 1.0, 2.0} and "reward" not in batch
    assert batch["next", "obs"].shape == (8, 3)
    info = replay.server_info()
    assert sorted(info) == ["queue", "replay"]
    assert (info["replay"]["inserts"], info["replay"]["samples"]) == (3, 8)
    assert (info["queue"]["inserts"], info["queue"]["samples"], info["queue"]["size"]) == (2, 1, 1)
    assert info["replay"]["clients"] == 1  # both tables' calls went over this thread's one connection
    assert {k: queue.info()[k] for k in ("inserts", "samples", "size")} == {
        "inserts": 2,
        "samples": 1,
        "size": 1,
    }


def test_a_blocked_queue_call_times_out_while_the_replay_table_serves_another_client(server):
    replay, queue = server.client("replay"), server.client("queue")
    replay.insert(make(2))
    errors: dict = {}

    def blocked_sample() -> None:  # its own thread: its own connection, another client for the server
        t0 = time.monotonic()
        try:
            queue.sample(1, timeout=1.0)
        except TimeoutError as err:
            errors["sample"] = (str(err), time.monotonic() - t0)

    waiter = threading.Thread(target=blocked_sample, daemon=True)
    waiter.start()
    deadline = time.monotonic() + 5
    while replay.server_info()["queue"]["waiting_samples"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    worst = 0.0
    while waiter.is_alive():  # the replay table answers at once all along
        t0 = time.monotonic()
        replay.insert(make(1, 100))
        replay.sample(2, timeout=0)
        worst = max(worst, time.monotonic() - t0)
    waiter.join()
    message, waited = errors["sample"]
    assert "table 'queue': sample(1) timed out" in message and 1.0 <= waited < 1.0 + SLACK
    assert worst < 0.5
    assert replay.server_info()["queue"]["waiting_samples"] == 0
    # the queue's limiter also blocks its inserts when full; the replay table keeps taking items
    queue.insert(rollout(4))
    with pytest.raises(TimeoutError, match="table 'queue': insert timed out.*0 of 1") as err:
        queue.insert(rollout(1), timeout=0.2)
    assert err.value.num_inserted == 0
    assert replay.insert(make(1, 200), timeout=0).numel() == 1
    assert [queue.sample(1)["reward"].item() for _ in range(4)] == [0.0, 1.0, 2.0, 3.0]


def test_priorities_are_updated_on_the_named_table_only(server):
    replay = server.client("replay")
    queue = replay.table("queue")
    assert replay.insert(make(2), priority=[1.0, 1.0]).tolist() == [0, 1]
    assert queue.insert(rollout(2), priority=[1.0, 1.0]).tolist() == [0, 1]  # the same keys, another table
    replay.update_priorities([0, 1], [7.0, 3.0])
    state = server.state_dict()
    assert state["replay"]["priorities"].tolist() == [7.0, 3.0]
    assert state["queue"]["priorities"].tolist() == [1.0, 1.0]
    assert queue.sample(1)["priority"].tolist() == [1.0]
    assert queue.delete([1]) == 1 and (queue.size, replay.size) == (0, 2)
    queue.reset()
    assert replay.size == 2 and replay.info()["inserts"] == 2


def test_an_unknown_or_invalid_table_name_is_one_line_naming_the_tables(server):
    client = server.client()
    for ask in (lambda: client.table("nope"), lambda: server.client("nope")):
        with pytest.raises(
            ConfigError, match=r"^no table 'nope' on this server; its tables are 'replay', 'queue'$"
        ):
            ask()
    with pytest.raises(ConfigError, match="not a short identifier"):
        client.table("my table")
    token = client.__getstate__()["token"]
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a peer that skips the client's own check
    sock.settimeout(10.0)
    sock.connect(server.address)
    sock.sendall(token + wire.encode(["size", "nope"]))
    reply = msgpack.unpackb(sock.recv(4096)[4:])
    assert reply[:2] == ["err", "ConfigError"] and "'replay', 'queue'" in reply[2]
    sock.sendall(wire.encode(["size", "queue"]))
    assert msgpack.unpackb(sock.recv(4096)[4:]) == ["ok", 0]
    sock.sendall(wire.encode(["size", "no such name!"]))  # not an identifier: a breach, the connection goes
    assert sock.recv(4096) == b""
    sock.close()
    assert client.size == 0


def test_hostile_requests_on_named_tables_drop_only_their_connection(server, tmp_path):
    """Random messages with every operation and any table name, then a ``load`` whose tensor reference points
    outside its buffer: the server drops the offending connections, the load changes nothing, both tables serve."""
    import random

    from lightning_accelrl.replay.serving.buffers import export_state

    client = server.client()
    client.insert(make(2))
    token = client.__getstate__()["token"]

    def exchange(data: bytes, fds: list[int] | None = None) -> bytes:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(10.0)
        sock.connect(server.address)
        try:
            sock.sendall(token)
            socket.send_fds(sock, [data], fds or [])
            return sock.recv(4096)
        except OSError:
            return b""
        finally:
            sock.close()

    rng = random.Random(1)
    names = ["replay", "queue", "nope", "", "a b", "x" * 65, "../etc", 7, None, b"queue"]
    atoms = [
        0,
        1,
        -1,
        2**40,
        1.5,
        float("nan"),
        "x",
        b"\0" * 8,
        None,
        str(tmp_path / "c.ckpt"),
        {},
        {"replay": 1},
    ]
    for _ in range(200):
        op = rng.choice(list(wire._SCHEMAS) + ["?"])
        args = [rng.choice(atoms) for _ in range(rng.randint(0, 3))]
        if rng.random() < 0.7:
            args.append(rng.choice(names))
        exchange(wire.encode([op, *args]))
    client.reset()
    client.insert(make(2))
    before = server.state_dict()
    tree, storage = export_state({"replay": before["replay"], "queue": before["queue"]})
    tree["replay"]["keys"] = wire.TensorRef(1 << 30, 2, "int64", (2,))  # outside the buffer
    reply = exchange(wire.encode(["load", tree, storage.nbytes()]), [int(storage._share_fd_cpu_()[0])])
    assert reply == b""  # a breach: dropped without an answer
    assert same(server.state_dict(), before)
    assert client.sample(2, timeout=5)["x"].numel() == 2 and client.table("queue").size == 0


@pytest.mark.parametrize(
    ("tables", "message"),
    [
        ([REPLAY, functools.partial(Table.queue, "replay", 4)], "two tables are named 'replay'"),
        ([functools.partial(Table.queue, "a queue", 4)], "not a short identifier"),
    ],
)
def test_tables_with_clashing_or_invalid_names_do_not_start(tables, message):
    with pytest.raises(RuntimeError, match=message):
        TableServer(tables, start_method="fork").start()


def test_a_checkpoint_of_both_tables_restores_into_a_new_server_bit_identically(server, tmp_path):
    fill(server.client(), server.client("queue"))
    state = server.state_dict()
    torch.save(state, tmp_path / "tables.pt")
    loaded = torch.load(tmp_path / "tables.pt", weights_only=True)
    assert sorted(loaded) == ["queue", "replay"] and same(loaded, state)
    restored = TableServer([REPLAY, QUEUE], start_method="fork")
    restored.load_state_dict(loaded)  # before start: applied once the tables are built
    with restored:
        assert same(restored.state_dict(), state)
        assert draws(restored.client(), restored.client("queue")) == draws(
            server.client(), server.client("queue")
        )
    with TableServer([QUEUE, REPLAY], start_method="fork") as running:  # another order, loaded while running
        running.client("replay").insert(make(1, 500))
        running.load_state_dict(loaded)
        assert same(running.state_dict(), state)
        with pytest.raises(ConfigError, match=r"the state holds tables \['replay'\], this server has"):
            running.load_state_dict({"replay": loaded["replay"]})
    with TableServer(REPLAY, start_method="fork") as single:  # one table: the API of one table, as before
        client = single.client()
        assert client.tables == ("replay",)
        client.insert(make(2))
        assert same(client.state_dict(), single.state_dict()["replay"])


# -- RayTable -------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ray_session():
    pytest.importorskip("ray")
    from ray_helpers import local_ray  # (tests/ is on sys.path)

    with local_ray(by_value=sys.modules[__name__]):  # workers cannot import this module
        yield


def test_a_ray_actor_hosts_both_tables_and_restores_them(ray_session):
    import ray

    from lightning_accelrl.replay.ray_table import RayTable

    options = {"num_cpus": 0}
    replay = RayTable.serve([REPLAY, QUEUE], actor_options=options, actor_name="accelrl-test-multi")
    queue = replay.table("queue")
    assert (replay.tables, replay.name, queue.name, queue.max_size) == (
        ("replay", "queue"),
        "replay",
        "queue",
        4,
    )
    assert RayTable.connect("accelrl-test-multi", table="queue").size == 0
    for ask in (lambda: replay.table("nope"), lambda: ray.get(replay.actor.size.remote("nope"))):
        with pytest.raises(
            ConfigError, match="no table 'nope' on this server; its tables are 'replay', 'queue'"
        ):
            ask()
    # a sample blocked on the queue times out inside the actor while the replay table serves this thread
    result: dict = {}

    def blocked_sample() -> None:
        try:
            queue.sample(1, timeout=1.0)
        except TimeoutError as err:
            result["err"] = err

    waiter = threading.Thread(target=blocked_sample)
    waiter.start()
    replay.insert(make(2))
    t0 = time.monotonic()
    assert replay.sample(3, timeout=0)["x"].numel() == 3 and time.monotonic() - t0 < 0.5
    waiter.join()
    assert "table 'queue': sample(1) timed out" in str(result["err"])
    # priorities on one table only
    assert queue.insert(rollout(2)).tolist() == [0, 1]
    replay.update_priorities([0, 1], [7.0, 3.0])
    info = replay.server_info()
    assert (info["replay"]["samples"], info["queue"]["samples"], info["queue"]["size"]) == (3, 0, 2)
    state = replay.server_state_dict()
    assert state["replay"]["priorities"].tolist() == [7.0, 3.0] and state["queue"]["priorities"].tolist() == [
        1.0,
        1.0,
    ]
    assert queue.sample(2)["reward"].tolist() == [0.0, 1.0]
    # a checkpoint of both, through torch.save / torch.load(weights_only=True), into a new actor
    fill(replay, queue)
    state = replay.server_state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    copy = RayTable.serve([REPLAY, QUEUE], actor_options=options)
    copy.load_server_state_dict(loaded)
    assert same(copy.server_state_dict(), state)
    assert draws(copy, copy.table("queue")) == draws(replay, queue)
    with pytest.raises(ConfigError, match="the state holds tables"):
        copy.load_server_state_dict({"queue": loaded["queue"]})
    copy.kill()
    replay.kill()
