"""Atomic, checksummed checkpoint files for replay tables.

Layout: a 64-byte header (magic, format version, payload length, SHA-256 of the payload) followed by the payload
written by ``torch.save``. Writing goes to a temporary file in the same directory, is fsynced, and then replaces the
target with ``os.replace``, so a crash mid-write leaves the previous checkpoint intact. Reading checks the header,
length and checksum before unpickling (with ``weights_only=True``), so a missing, truncated or corrupt file is a
``ValueError`` that names the path, never a half-restored table.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from pathlib import Path
from typing import Any

import torch

from lightning_accelrl.atomic import atomic_write

__all__ = ["FORMAT_VERSION", "MAGIC", "read_checkpoint", "write_checkpoint"]

MAGIC = b"LACRL-REPLAY\x00\x00\x00\x00"  # 16 bytes
FORMAT_VERSION = 1
_HEADER = struct.Struct("<16sIQ32s4x")  # magic, version, payload length, sha256, padding -> 64 bytes
assert _HEADER.size == 64


class _HashingWriter:
    """File-like wrapper that hashes and counts what ``torch.save`` streams through it (no in-memory copy)."""

    def __init__(self, file: Any) -> None:
        self._file = file
        self.sha = hashlib.sha256()
        self.length = 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.length += len(data)
        return self._file.write(data)

    def flush(self) -> None:
        self._file.flush()


def write_checkpoint(path: str | os.PathLike, payload: dict[str, Any]) -> Path:
    """Write ``payload`` atomically to ``path`` (parent directories are created)."""
    with atomic_write(path) as file:
        file.write(b"\0" * _HEADER.size)
        writer = _HashingWriter(file)
        torch.save(payload, writer)
        file.seek(0)
        file.write(_HEADER.pack(MAGIC, FORMAT_VERSION, writer.length, writer.sha.digest()))
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and verify a checkpoint; any problem is a ``ValueError`` naming ``path``."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read replay checkpoint {str(path)!r}: {err}") from err
    if len(data) < _HEADER.size:
        raise ValueError(
            f"replay checkpoint {str(path)!r} is truncated ({len(data)} bytes, no complete header)"
        )
    magic, version, length, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise ValueError(f"{str(path)!r} is not a replay checkpoint (bad magic)")
    if version != FORMAT_VERSION:
        raise ValueError(
            f"replay checkpoint {str(path)!r} has format version {version}, expected {FORMAT_VERSION}"
        )
    payload = memoryview(data)[_HEADER.size :]
    if len(payload) != length:
        raise ValueError(
            f"replay checkpoint {str(path)!r} is truncated or padded: payload {len(payload)} bytes, header says {length}"
        )
    if hashlib.sha256(payload).digest() != digest:
        raise ValueError(f"replay checkpoint {str(path)!r} is corrupt (checksum mismatch)")
    try:
        state = torch.load(io.BytesIO(payload), weights_only=True, map_location="cpu")
    except Exception as err:  # a valid checksum over an unreadable payload: written by something else
        raise ValueError(f"replay checkpoint {str(path)!r} cannot be loaded: {err}") from err
    if not isinstance(state, dict):
        raise ValueError(f"replay checkpoint {str(path)!r} does not hold a table state")
    return state
