"""The table server's wire format: a raw token, then length-prefixed msgpack messages of a fixed schema.

A connection starts with the client's :data:`TOKEN_BYTES`-byte token, compared in constant time before anything
else is read as a message. Every message is a 4-byte little-endian length and a msgpack array whose first element
names the operation; :func:`parse_request` checks each request against its schema (types, arity, ranges) and
raises :class:`ProtocolError` on anything else, which drops that connection. A request on one table may end with the
table's name (a short identifier, see :mod:`.names`); without it, it addresses the server's first table. Nothing on
the wire is ever unpickled:
item data and table states travel through shared memory (see :mod:`.buffers`), descriptors with ``SCM_RIGHTS``.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack
import numpy as np
import torch

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.replay.errors import InsertTimeout
from lightning_accelrl.replay.serving.names import is_table_name
from lightning_accelrl.replay.storage import DTYPES

__all__ = [
    "MAX_FDS",
    "MAX_FIELDS",
    "MAX_MESSAGE_BYTES",
    "TOKEN_BYTES",
    "FrameReader",
    "ProtocolError",
    "Request",
    "TensorRef",
    "decode",
    "decode_error",
    "encode",
    "encode_payload",
    "encode_error",
    "parse_layout",
    "parse_request",
    "peer_credentials",
    "send",
]

TOKEN_BYTES = 32
#: Largest message (headers and priorities only; item data never goes through the socket).
MAX_MESSAGE_BYTES = 32 << 20
#: Most fields per item, and so most descriptors passed with one message.
MAX_FIELDS = 256
MAX_FDS = MAX_FIELDS
#: Largest shared buffer a peer may ask the other side to map (bytes).
MAX_BUFFER_BYTES = 1 << 40
_LEN = struct.Struct("<I")
_TENSOR_EXT = 1  # msgpack extension code of a reference to a tensor in a shared state buffer
_TENSOR_REF = struct.Struct("<QQ")  # offset, number of elements (then dtype name and shape, msgpack-encoded)

NestedKey = tuple[str, ...]
Layout = list[tuple[NestedKey, str, tuple[int, ...]]]  # (field, dtype name, per-item shape)


class ProtocolError(ConnectionError):
    """A message that does not follow the schema: the connection that sent it is dropped."""


@dataclass(frozen=True)
class TensorRef:
    """A tensor of a state passed through a shared buffer: its place in the buffer, dtype and shape."""

    offset: int
    numel: int
    dtype: str
    shape: tuple[int, ...]


# -- framing --------------------------------------------------------------------------------------------------------
def _default(obj: Any) -> Any:
    if isinstance(obj, TensorRef):
        tail = msgpack.packb([obj.dtype, list(obj.shape)])
        return msgpack.ExtType(_TENSOR_EXT, _TENSOR_REF.pack(obj.offset, obj.numel) + tail)
    if isinstance(obj, tuple):
        return list(obj)
    raise TypeError(f"cannot send a {type(obj).__name__} over the table wire")


def _ext_hook(code: int, data: bytes) -> Any:
    if code != _TENSOR_EXT or len(data) < _TENSOR_REF.size:
        raise ProtocolError(f"unknown msgpack extension {code}")
    offset, numel = _TENSOR_REF.unpack_from(data)
    dtype, shape = msgpack.unpackb(data[_TENSOR_REF.size :])
    if dtype not in DTYPES or not _int_list(shape) or math.prod(shape) != numel:
        raise ProtocolError("malformed tensor reference")
    return TensorRef(offset, numel, dtype, tuple(shape))


def encode_payload(msg: Any) -> bytes:
    """A message's msgpack payload (tuples as lists, tensor references as an extension type)."""
    return msgpack.packb(msg, use_bin_type=True, default=_default)


def encode(msg: list) -> bytes:
    """One framed message."""
    payload = encode_payload(msg)
    if len(payload) > MAX_MESSAGE_BYTES:
        raise ValueError(f"message of {len(payload)} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
    return _LEN.pack(len(payload)) + payload


def decode(payload: bytes) -> Any:
    """A message's payload decoded (msgpack; tensor references as :class:`TensorRef`); ProtocolError if malformed."""
    try:
        return msgpack.unpackb(payload, raw=False, strict_map_key=True, ext_hook=_ext_hook)
    except ProtocolError:
        raise
    except Exception as err:  # msgpack raises several types for malformed input
        raise ProtocolError(f"undecodable message ({type(err).__name__})") from None


def send(sock: socket.socket, msg: list, fds: list[int] | None = None) -> None:
    """Send one message; ``fds`` travel with its first byte."""
    data = encode(msg)
    if fds:
        sent = socket.send_fds(sock, [data], fds)
        data = data[sent:]
    if data:
        sock.sendall(data)


class FrameReader:
    """Collects bytes and descriptors from a peer and cuts them into messages (and the leading token)."""

    def __init__(self, expect_token: bool) -> None:
        self.buf = bytearray()
        self.fds: list[int] = []
        self.token_pending = expect_token

    def feed(self, data: bytes, fds: list[int]) -> None:
        self.buf += data
        self.fds.extend(fds)
        if len(self.fds) > MAX_FDS:
            raise ProtocolError(f"more than {MAX_FDS} descriptors pending")

    def wanted(self) -> int:
        """How many bytes to ask the socket for next: the rest of the message being read, or a small read."""
        if len(self.buf) >= _LEN.size:
            (size,) = _LEN.unpack_from(self.buf)
            rest = _LEN.size + size - len(self.buf)
            if rest > 0:
                return min(max(rest, 4096), 1 << 20)
        return 4096

    def token(self) -> bytes | None:
        """The leading token once complete (then removed from the buffer), else None."""
        if len(self.buf) < TOKEN_BYTES:
            return None
        token = bytes(self.buf[:TOKEN_BYTES])
        del self.buf[:TOKEN_BYTES]
        self.token_pending = False
        return token

    def next_message(self) -> Any | None:
        """The next complete message, decoded, or None; ProtocolError for an oversized or undecodable one."""
        if len(self.buf) < _LEN.size:
            return None
        (size,) = _LEN.unpack_from(self.buf)
        if size > MAX_MESSAGE_BYTES:
            raise ProtocolError(f"message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit")
        end = _LEN.size + size
        if len(self.buf) < end:
            return None
        payload = bytes(self.buf[_LEN.size : end])
        del self.buf[:end]
        return decode(payload)

    def take_fds(self, count: int) -> list[int]:
        if len(self.fds) < count:
            raise ProtocolError(f"expected {count} descriptors, got {len(self.fds)}")
        taken, self.fds = self.fds[:count], self.fds[count:]
        return taken

    def close(self) -> None:
        for fd in self.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fds = []


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket (Linux ``SO_PEERCRED``)."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _ = struct.unpack("3i", creds)
    return pid, uid


# -- requests -------------------------------------------------------------------------------------------------------
@dataclass
class Request:
    """A request that passed its schema check."""

    op: str
    n: int = 0
    timeout: float | None = None
    priority: float | np.ndarray | None = None  # None (insert only): the table's largest priority so far
    keys: np.ndarray | None = None
    layout: Layout | None = None
    capacity: int = 0
    path: str = ""
    table: str | None = None  # None: the server's first table
    state: Any = None  # a state tree of TensorRefs ("load")


def _int(value: Any, lo: int, hi: int, what: str) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolError(f"{what} must be an int in [{lo}, {hi}]")
    return value


def _int_list(value: Any) -> bool:
    return isinstance(value, list) and all(type(v) is int and 0 <= v < 1 << 40 for v in value)


def _timeout(value: Any) -> float | None:
    if value is None:
        return None
    if type(value) not in (int, float) or not 0 <= value < math.inf:
        raise ProtocolError("timeout must be None or a finite number >= 0")
    return float(value)


def _floats(value: Any, n: int | None) -> float | np.ndarray:
    """A priority (number) or priorities (raw little-endian float64 bytes, ``n`` of them when n is given)."""
    if type(value) in (int, float):
        return float(value)
    if not isinstance(value, bytes) or len(value) % 8 or (n is not None and len(value) != 8 * n):
        raise ProtocolError("priorities must be a number or float64 bytes, one per item")
    return np.frombuffer(value, dtype="<f8")


def _int64s(value: Any) -> np.ndarray:
    if not isinstance(value, bytes) or len(value) % 8:
        raise ProtocolError("keys must be int64 bytes")
    return np.frombuffer(value, dtype="<i8")


def parse_layout(value: Any, capacity: int) -> Layout:
    """A buffer layout from the wire: fields (nested keys of strings), dtypes from :data:`DTYPES`, shapes."""
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_FIELDS:
        raise ProtocolError(f"a layout is a list of 1 to {MAX_FIELDS} fields")
    layout: Layout = []
    total = 0
    for entry in value:
        if not (isinstance(entry, list) and len(entry) == 3):
            raise ProtocolError("a layout field is [key, dtype, shape]")
        key, dtype, shape = entry
        if not (isinstance(key, list) and key and all(isinstance(p, str) and p for p in key)):
            raise ProtocolError("a field key is a non-empty list of names")
        if dtype not in DTYPES or not _int_list(shape) or len(shape) > 16:
            raise ProtocolError("a field needs a known dtype and a shape of non-negative ints")
        total += capacity * math.prod(shape) * DTYPES[dtype].itemsize
        layout.append((tuple(key), dtype, tuple(shape)))
    if total > MAX_BUFFER_BYTES:
        raise ProtocolError("buffer too large")
    return layout


_MAX_N = 1 << 31
_SCHEMAS: dict[str, tuple[int, bool]] = {  # op -> (number of arguments after it, may end with a table name)
    "stage": (2, True),
    "insert": (3, True),
    "sample": (2, True),
    "update": (2, True),
    "delete": (1, True),
    "reset": (0, True),
    "size": (0, True),
    "info": (0, True),
    "checkpoint": (1, True),
    "state": (0, True),
    "server_info": (0, False),  # every table's info, by name
    "server_state": (0, False),  # every table's state, by name (one consistent snapshot)
    "load": (
        2,
        False,
    ),  # every table's state, by name: a state tree and the size of its buffer (a descriptor)
}


def _split_table(msg: Any) -> tuple[str, list, str | None]:
    """(op, arguments, table name or None) of a message that fits its operation's arity."""
    if not isinstance(msg, list) or not msg or msg[0] not in _SCHEMAS:
        raise ProtocolError("unknown request")
    op, args = msg[0], msg[1:]
    arity, named = _SCHEMAS[op]
    if named and len(args) == arity + 1:
        if not is_table_name(args[-1]):
            raise ProtocolError("a table name is a short identifier")
        return op, args[:-1], args[-1]
    if len(args) != arity:
        raise ProtocolError("unknown request")
    return op, args, None


def parse_request(msg: Any) -> Request:
    """Check a decoded message against its operation's schema; ProtocolError if it does not fit."""
    op, args, table = _split_table(msg)
    req = _parse_args(op, args)
    req.table = table
    return req


def _parse_args(op: str, args: list) -> Request:
    if op == "stage":
        capacity = _int(args[1], 1, _MAX_N, "capacity")
        return Request(op, layout=parse_layout(args[0], capacity), capacity=capacity)
    if op == "insert":
        n = _int(args[0], 1, _MAX_N, "n")
        priority = None if args[1] is None else _floats(args[1], n)
        return Request(op, n=n, priority=priority, timeout=_timeout(args[2]))
    if op == "sample":
        return Request(op, n=_int(args[0], 1, _MAX_N, "n"), timeout=_timeout(args[1]))
    if op == "update":
        keys = _int64s(args[0])
        return Request(op, keys=keys, priority=_floats(args[1], len(keys)))
    if op == "delete":
        return Request(op, keys=_int64s(args[0]))
    if op == "checkpoint":
        if not isinstance(args[0], str) or not os.path.isabs(args[0]) or "\0" in args[0]:
            raise ProtocolError("a checkpoint path is an absolute path")
        return Request(op, path=args[0])
    if op == "load":
        if not isinstance(args[0], dict) or not all(is_table_name(k) for k in args[0]):
            raise ProtocolError("a state to load maps table names to table states")
        return Request(op, state=args[0], capacity=_int(args[1], 0, MAX_BUFFER_BYTES, "state size"))
    return Request(op)


# -- errors ---------------------------------------------------------------------------------------------------------
_ERRORS: dict[str, Callable[[str], BaseException]] = {
    "ConfigError": ConfigError,
    "ValueError": ValueError,
    "TypeError": TypeError,
    "TimeoutError": TimeoutError,
    "InsertTimeout": InsertTimeout,
    "KeyError": KeyError,
    "IndexError": IndexError,
    "RuntimeError": RuntimeError,
}


def encode_error(err: BaseException) -> list:
    """An exception as a message: its kind (one of a fixed set), text, and a timed-out insert's keys."""
    kind = type(err).__name__
    text = str(err) if kind in _ERRORS else f"{kind}: {err}"
    raw = err.keys.numpy().astype("<i8").tobytes() if isinstance(err, InsertTimeout) else None
    return ["err", kind if kind in _ERRORS else "RuntimeError", text, raw]


def decode_error(msg: list) -> BaseException:
    """The exception an ``err`` message describes (a timed-out insert carries ``keys`` and ``num_inserted``)."""
    if len(msg) != 4 or not isinstance(msg[2], str):
        return ProtocolError("malformed error reply")
    if msg[1] == "InsertTimeout":
        raw = msg[3] if isinstance(msg[3], bytes) and len(msg[3]) % 8 == 0 else b""
        return InsertTimeout(msg[2], torch.from_numpy(np.frombuffer(raw, dtype="<i8").astype(np.int64)))
    return _ERRORS.get(msg[1], RuntimeError)(msg[2])
