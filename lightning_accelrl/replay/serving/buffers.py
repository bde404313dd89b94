"""Shared-memory buffers between a table server and its clients, mapped by file descriptor.

Buffers are torch shared-memory storages of the file-descriptor kind: the ``/dev/shm`` name is unlinked at once,
so nothing is left behind even after ``kill -9``; the memory lives while a process holds the descriptor or a
mapping. :class:`SharedBuffers` holds item fields (a client's staging buffer, a sample's output buffer);
:func:`export_state` / :func:`import_state` move a table state (nested dicts and lists of numbers, strings and
tensors) through one buffer and a msgpack tree of :class:`~.wire.TensorRef`.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from tensordict import TensorDict

from lightning_accelrl.replay.serving.wire import DTYPES, Layout, NestedKey, ProtocolError, TensorRef
from lightning_accelrl.replay.storage import new_tensordict

__all__ = ["SharedBuffers", "export_state", "import_state", "layout_of", "map_fd", "nest"]

_ALIGN = 64


def _new_storage(nbytes: int) -> torch.UntypedStorage:
    """Fresh shared memory: shm_open and unlink at once, keeping the descriptor (torch's fd strategy)."""
    return torch.UntypedStorage._new_using_fd_cpu(max(1, nbytes))


def map_fd(fd: int, nbytes: int) -> torch.UntypedStorage:
    """Map a peer's buffer; refuses a descriptor whose file is smaller than ``nbytes`` (touching pages past its
    end would kill this process with SIGBUS)."""
    nbytes = max(1, nbytes)
    try:
        size = os.fstat(fd).st_size
    except OSError as err:
        raise ProtocolError(f"unusable descriptor ({err})") from None
    if size < nbytes:
        raise ProtocolError(f"shared buffer of {size} bytes, {nbytes} announced")
    return torch.UntypedStorage._new_shared_fd_cpu(fd, nbytes)


def _fd_of(storage: torch.UntypedStorage) -> int:
    """The descriptor of a storage made by :func:`_new_storage` (owned by it: send it, never close it)."""
    return int(storage._share_fd_cpu_()[0])


class SharedBuffers:
    """Tensors of ``capacity`` rows, one per field, in shared memory that another process maps by descriptor."""

    def __init__(self, layout: Layout, capacity: int, fds: list[int] | None = None) -> None:
        self.layout = layout
        self.capacity = int(capacity)
        self.keys: list[NestedKey] = [k for k, _, _ in layout]
        self.tensors: list[torch.Tensor] = []
        self._rows: tuple[int, dict[NestedKey, torch.Tensor]] | None = None
        for i, (_, dtype_name, shape) in enumerate(layout):
            dtype = DTYPES[dtype_name]
            full = (self.capacity, *shape)
            nbytes = self.capacity * _numel(shape) * dtype.itemsize
            storage = _new_storage(nbytes) if fds is None else map_fd(fds[i], nbytes)
            self.tensors.append(torch.empty(0, dtype=dtype).set_(storage, 0, full))

    def fds(self) -> list[int]:
        """Descriptors of the buffers (owned by the storages: send them, never close them)."""
        return [_fd_of(t.untyped_storage()) for t in self.tensors]

    def matches(self, layout: Layout, n: int) -> bool:
        return layout == self.layout and n <= self.capacity

    def rows(self, n: int) -> dict[NestedKey, torch.Tensor]:
        """The first ``n`` rows of each field, by field (the same mapping while ``n`` does not change)."""
        if self._rows is None or self._rows[0] != n:
            self._rows = (n, {k: t[:n] for k, t in zip(self.keys, self.tensors)})
        return self._rows[1]


def _numel(shape: tuple[int, ...]) -> int:
    out = 1
    for s in shape:
        out *= s
    return out


def layout_of(leaves: list[tuple[NestedKey, torch.Tensor]]) -> Layout:
    return [(k, str(v.dtype).removeprefix("torch."), tuple(v.shape[1:])) for k, v in leaves]


def nest(keys: list[NestedKey], values: list[torch.Tensor], n: int) -> TensorDict:
    """A TensorDict [n] from (nested key, tensor) pairs, built without re-checking the shapes."""
    root: dict[str, Any] = {}
    for key, value in zip(keys, values):
        node = root
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
    return _td(root, n)


def _td(tree: dict[str, Any], n: int) -> TensorDict:
    return new_tensordict({k: _td(v, n) if isinstance(v, dict) else v for k, v in tree.items()}, n)


# -- table states ---------------------------------------------------------------------------------------------------
def export_state(state: Any) -> tuple[Any, torch.UntypedStorage]:
    """(tree, buffer): ``state`` with every tensor copied into one shared buffer and replaced by a TensorRef."""
    tensors: list[torch.Tensor] = []
    tree = _strip(state, tensors)
    offsets, total = [], 0
    for t in tensors:
        offsets.append(total)
        total += -(-t.numel() * t.element_size() // _ALIGN) * _ALIGN
    storage = _new_storage(total)
    flat = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (max(1, total),))
    for t, offset in zip(tensors, offsets):
        dense = torch.empty(t.numel(), dtype=t.dtype)  # stride 1 whatever t's strides (size-1 dims may be 0)
        dense.copy_(t.detach().cpu().reshape(-1))
        raw = dense.view(torch.uint8)
        flat[offset : offset + raw.numel()].copy_(raw)
    return _refs(tree, tensors, offsets), storage


def _strip(value: Any, tensors: list[torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        tensors.append(value)
        return _Slot(len(tensors) - 1)
    if isinstance(value, dict):
        return {str(k): _strip(v, tensors) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strip(v, tensors) for v in value]
    if value is None or isinstance(value, (bool, int, float, str, bytes)):
        return value
    raise TypeError(f"a table state may not hold a {type(value).__name__}")


class _Slot:
    __slots__ = ("index",)

    def __init__(self, index: int) -> None:
        self.index = index


def _refs(tree: Any, tensors: list[torch.Tensor], offsets: list[int]) -> Any:
    def walk(value: Any) -> Any:
        if isinstance(value, _Slot):
            t = tensors[value.index]
            dtype = str(t.dtype).removeprefix("torch.")
            if dtype not in DTYPES:
                raise TypeError(f"a table state may not hold a {dtype} tensor")
            return TensorRef(offsets[value.index], t.numel(), dtype, tuple(t.shape))
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(tree)


def import_state(tree: Any, fd: int, nbytes: int) -> Any:
    """The state :func:`export_state` sent: tensors copied out of the peer's buffer (checked against its size)."""
    storage = map_fd(fd, nbytes)
    flat = torch.empty(0, dtype=torch.uint8).set_(storage, 0, (max(1, nbytes),))

    def walk(value: Any) -> Any:
        if isinstance(value, TensorRef):
            dtype = DTYPES[value.dtype]
            size = value.numel * dtype.itemsize
            if value.offset % _ALIGN or value.offset + size > nbytes:
                raise ProtocolError("tensor reference outside the state buffer")
            raw = flat[value.offset : value.offset + size].clone()
            return raw.view(dtype).reshape(value.shape)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value

    return walk(tree)
