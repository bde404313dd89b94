"""Hostile and broken peers of a table server: nothing they send runs code, and the server keeps serving.

Each case connects to the server's socket directly and sends what an attacker (or a buggy client) might: pickle
payloads in every framing, garbage, an absurd length, a wrong token, malformed requests, a descriptor smaller
than announced. After each one the connection is closed by the server, a marker file the pickle payload would
create does not exist, and a well-behaved client still gets correct answers.
"""

from __future__ import annotations

import math
import os
import pickle
import random
import socket
import struct
import time

import msgpack
import pytest
import torch
from tensordict import TensorDict

from lightning_accelrl.replay import Table, TableClient, TableServer
from lightning_accelrl.replay.serving import wire


class _Payload:
    """Unpickling this creates ``path`` (what an attacker's payload would do with any command)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def _queue() -> Table:
    return Table.queue("q", 100)


@pytest.fixture(scope="module")
def server():
    with TableServer(_queue, start_method="fork") as srv:
        yield srv


def _connect(server: TableServer) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(10.0)
    sock.connect(server.address)
    return sock


def _token(server: TableServer) -> bytes:
    return server.client().__getstate__()["token"]


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed the connection (end-of-file or reset) without answering."""
    try:
        data = sock.recv(4096)
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        sock.close()
    return data == b""


def _still_serving(server: TableServer) -> None:
    client = server.client()
    keys = client.insert(TensorDict({"x": torch.arange(3.0)}, [3]))
    batch = client.sample(3, timeout=5)
    assert batch["key"].tolist() == keys.tolist()
    assert batch["x"].tolist() == [0.0, 1.0, 2.0]
    client.close()


def _pickles(marker: str) -> list[bytes]:
    return [pickle.dumps(_Payload(marker), protocol=p) for p in (2, 4, 5)]


def test_pickle_payloads_in_any_framing_run_nothing(server, tmp_path):
    marker = str(tmp_path / "pwned")
    token = _token(server)
    for payload in _pickles(marker):
        framings = [
            payload,  # instead of the token
            struct.pack("<I", len(payload)) + payload,  # the old framing, no token
            token + struct.pack("<I", len(payload)) + payload,  # a framed pickle after the right token
            token + wire.encode(payload),  # wrapped in msgpack bytes
            token + wire.encode(["insert", 1, payload, None]),  # as a field of a real request
        ]
        for data in framings:
            sock = _connect(server)
            sock.sendall(data)
            if len(data) < wire.TOKEN_BYTES:  # too short to be a token: the server waits; hang up ourselves
                sock.close()
            else:
                assert _closed_by_server(sock)
    assert not os.path.exists(marker)
    assert server.is_alive()
    _still_serving(server)


@pytest.mark.parametrize(
    "data",
    [
        b"\x00" * wire.TOKEN_BYTES,  # a wrong token
        os.urandom(wire.TOKEN_BYTES + 100),  # garbage
    ],
    ids=["wrong-token", "garbage"],
)
def test_wrong_token_or_garbage_drops_the_connection(server, data):
    sock = _connect(server)
    sock.sendall(data)
    assert _closed_by_server(sock)
    _still_serving(server)


@pytest.mark.parametrize(
    "tail",
    [
        struct.pack("<I", 0xFFFFFFFF),  # an absurd length: refused before anything is allocated
        struct.pack("<I", wire.MAX_MESSAGE_BYTES + 1),
        struct.pack("<I", 5) + b"\xc1\xc1\xc1\xc1\xc1",  # not msgpack
        wire.encode(["nonsense"]),
        wire.encode({"op": "size"}),
        wire.encode(["sample", 2.7, None]),
        wire.encode(["sample", 1, float("nan")]),
        wire.encode(["insert", 1, 1.0, None]),  # an insert without a staging buffer is the table's error...
        wire.encode(["stage", [[["x"], "object", [1]]], 4]),  # unknown dtype
        wire.encode(["stage", [[["x"], "float32", [1 << 30]]], 1 << 20]),  # absurd buffer
        wire.encode(["update", b"\x01\x02\x03", 1.0]),  # keys not int64 bytes
        wire.encode(["checkpoint", 7]),
        wire.encode(
            ["checkpoint", "relative/path.ckpt"]
        ),  # the server's working directory is nobody's business
    ],
)
def test_malformed_requests_drop_only_that_connection(server, tail):
    sock = _connect(server)
    sock.sendall(_token(server) + tail)
    if tail == wire.encode(["insert", 1, 1.0, None]):  # ...answered, not a protocol breach
        reply = sock.recv(4096)
        sock.close()
        assert msgpack.unpackb(reply[4:])[0] == "err"
    else:
        assert _closed_by_server(sock)
    _still_serving(server)


def test_a_descriptor_smaller_than_announced_is_refused(server):
    fd = os.memfd_create("small")
    os.ftruncate(fd, 8)
    try:
        sock = _connect(server)
        sock.sendall(_token(server))
        socket.send_fds(sock, [wire.encode(["stage", [[["x"], "float32", [1024]]], 1024])], [fd])
        assert _closed_by_server(
            sock
        )  # mapping it would have killed the server with SIGBUS at the first copy
    finally:
        os.close(fd)
    _still_serving(server)


def test_client_refuses_a_server_with_another_pid(server):
    state = server.client().__getstate__()
    impostor = TableClient(state["address"], state["token"], os.getpid(), "q", 100)
    with pytest.raises(ConnectionError, match="not the table server"):
        impostor.size  # noqa: B018
    _still_serving(server)


def test_token_has_a_fixed_size():
    with pytest.raises(ValueError, match="32 bytes"):
        TableClient("\0nowhere", b"short", 1, "q", 1)


def test_a_stalled_peer_does_not_stall_the_server(server):
    sock = _connect(server)
    sock.sendall(_token(server) + wire.encode(["size"])[:3])  # half a header, then silence
    start = time.monotonic()
    _still_serving(server)
    assert time.monotonic() - start < 2.0
    sock.close()


def test_a_connection_without_its_token_is_dropped_after_a_few_seconds(server):
    sock = _connect(server)
    start = time.monotonic()
    assert _closed_by_server(sock)  # recv returns end-of-file once the server gives up on it
    assert 4.0 < time.monotonic() - start < 8.0


def test_random_messages_never_kill_the_server(server, tmp_path):
    """300 random msgpack messages (any operation name, argument count and type) after the right token."""
    rng = random.Random(0)
    atoms = [
        0,
        1,
        -1,
        2**31,
        2**63 - 1,
        -(2**63),
        1.5,
        math.nan,
        math.inf,
        "",
        "x",
        "float32",
        b"",
        b"\0" * 8,
    ]
    atoms += [None, True, str(tmp_path / "ckpt")]

    def value(depth: int = 0):
        if depth > 2 or rng.random() < 0.6:
            return rng.choice(atoms)
        return [value(depth + 1) for _ in range(rng.randint(0, 3))]

    ops = ["stage", "insert", "sample", "update", "delete", "size", "info", "checkpoint", "state", "?"]
    token = _token(server)
    for _ in range(300):
        sock = _connect(server)
        try:
            sock.sendall(token + wire.encode([rng.choice(ops)] + [value() for _ in range(rng.randint(0, 3))]))
            sock.recv(64)
        except OSError:
            pass
        sock.close()
    _still_serving(server)
