"""Atomic, checksummed checkpoint files for replay tables.

Layout: a 64-byte header (magic, format version, payload length, SHA-256 of the payload) followed by the payload
written by ``torch.save``. Writing goes to a temporary file in the same directory, is fsynced, and then replaces the
target with ``os.replace``, so a crash mid-write leaves the previous checkpoint intact. Reading checks the header,
length and checksum before unpickling (with ``weights_only=True``), so a missing, truncated or corrupt file is a
``ValueError`` that names the path, never a half-restored table.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import struct
import tempfile
from pathlib import Path
from typing import Any

import torch

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(b"\0" * _HEADER.size)
            writer = _HashingWriter(file)
            torch.save(payload, writer)
            file.seek(0)
            file.write(_HEADER.pack(MAGIC, FORMAT_VERSION, writer.length, writer.sha.digest()))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable; some file systems do not allow fsync on directories, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
