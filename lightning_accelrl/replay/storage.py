"""Where a table keeps its items: the :class:`Storage` protocol and :class:`TensorStorage`.

The table owns the bookkeeping (keys, priorities, which slot holds which item, a free list of slots); a storage only
holds the item data by slot. Contract, all calls made by the table under its lock:

- ``write(slots, items, leaves=None, signature=None)``: ``slots`` int64 [N] (distinct), ``items`` a TensorDict with
  batch [N]; called in insertion order. ``leaves`` are the items' (nested key, tensor) fields as the table's field
  check collected them (in its field order), and ``signature`` an object that stands for their keys, dtypes and
  per-item shapes (the same object while they do not change), so a storage may skip its own walk over the items
  and cache its layout check by identity. A slot may be written again after it was released. An item evicted by
  an insert in the *same* ``insert`` call (for example a MinHeap remover evicting the lowest-priority item just
  inserted) is never written or released.
- ``write_item(slot, item, leaves, signature=None)``: ``write`` of one item given without a batch dimension.
- ``read(slots, out=None)``: a TensorDict with batch [len(slots)] (slots may repeat), holding *fresh* tensors: the
  table releases its lock after ``read`` and the slots may be overwritten at once. ``out`` (field -> tensor of
  ``len(slots)`` rows) offers tensors to gather into; a storage may use those whose dtype and shape fit (the
  returned batch then views them) or ignore them.
- ``release(slots)``: the items in these slots (a list of ints or an int64 tensor) were deleted, evicted or sampled
  ``max_times_sampled`` times. Called after any ``read`` of the same items in the same table call, and before those
  slots are written again.
- ``clear()``: the table was reset; every slot is free.
- ``state_dict()`` / ``load_state_dict(state)``: the data of the live slots (checkpoints keep slot numbers, so a
  storage may keep its own structure, such as shared frames). States should hold only tensors, numbers, strings,
  lists, tuples and dicts (checkpoints are loaded with ``torch.load(weights_only=True)``).
- ``share_memory_()``: move (or, if not yet allocated, later allocate) the data in shared memory so that processes
  forked or spawned afterwards read it without copies; returns ``self``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch
from tensordict import TensorDict, TensorDictBase

__all__ = [
    "DTYPES",
    "Leaves",
    "Storage",
    "TensorStorage",
    "copy_rows_",
    "describe_mismatch",
    "field_leaves",
    "new_tensordict",
]

NestedKey = tuple[str, ...]
Leaves = list[tuple[NestedKey, torch.Tensor]]

#: The dtypes an item field (or a state read from outside) may have, by name: names are never looked up otherwise.
DTYPES: dict[str, torch.dtype] = {
    str(d).removeprefix("torch."): d
    for d in (
        torch.bool,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.complex64,
        torch.complex128,
    )
}


@runtime_checkable
class Storage(Protocol):
    """What a table needs from the place that holds its items (see the module docstring for the contract)."""

    capacity: int

    def write(
        self, slots: torch.Tensor, items: TensorDictBase, leaves: Leaves | None = None, signature: Any = None
    ) -> None: ...

    def write_item(self, slot: int, item: TensorDictBase, leaves: Leaves, signature: Any = None) -> None: ...

    def read(
        self, slots: torch.Tensor, out: Mapping[NestedKey, torch.Tensor] | None = None
    ) -> TensorDictBase: ...

    def release(self, slots: Sequence[int] | torch.Tensor) -> None: ...

    def clear(self) -> None: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...

    def share_memory_(self) -> Storage: ...


class TensorStorage:
    """Preallocated tensors, one per field, with ``capacity`` rows; fields come from the first write (or
    ``example``). Nested TensorDict keys are allowed. Reads gather with ``index_select`` (much faster than fancy
    indexing on CPU)."""

    def __init__(
        self,
        capacity: int,
        example: TensorDictBase | None = None,
        device: torch.device | str | None = None,
    ) -> None:
        """``example``: one item (batch [] or [1]) or a batch of items to allocate the fields from at once, so the
        tensors exist (and can be shared) before the first insert."""
        if capacity < 1:
            raise ValueError(f"storage capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.device = torch.device(device) if device is not None else None
        self._shared = False
        self._keys: list[NestedKey] = []
        self._buffers: list[torch.Tensor] = []
        self._np: list[Any] | None = None  # numpy views of the buffers (None where numpy cannot view one)
        self._signature: tuple[tuple[NestedKey, torch.dtype, torch.Size], ...] | None = None
        self._accepted: Any = None  # a caller's signature object found equal to ours
        self._into: tuple[Any, Any, list] | None = None  # (read's out mapping, buffers, targets) last seen
        if example is not None:
            if example.batch_dims == 0:
                example = example.unsqueeze(0)
            self._allocate(example)

    # -- layout ----------------------------------------------------------------------------------------------
    @property
    def allocated(self) -> bool:
        return self._signature is not None

    @property
    def fields(self) -> dict[NestedKey, tuple[torch.dtype, torch.Size]]:
        """Field -> (dtype, per-item shape), empty before the first write."""
        return {k: (b.dtype, b.shape[1:]) for k, b in zip(self._keys, self._buffers)}

    @property
    def signature(self) -> tuple[tuple[NestedKey, torch.dtype, torch.Size], ...] | None:
        """(field, dtype, per-item shape) for each field in buffer order; None before the first write."""
        return self._signature

    def nbytes(self) -> int:
        return sum(b.numel() * b.element_size() for b in self._buffers)

    def _allocate(self, items: TensorDictBase) -> None:
        leaves = field_leaves(items)
        if not leaves:
            raise ValueError("items have no tensor fields")
        device = self.device
        keys, buffers = [], []
        for key, value in leaves:
            buf = torch.zeros(
                (self.capacity, *value.shape[1:]),
                dtype=value.dtype,
                device=device if device is not None else value.device,
            )
            if self._shared:
                buf.share_memory_()
            keys.append(key)
            buffers.append(buf)
        self._set_layout(keys, buffers)

    def _set_layout(self, keys: list[NestedKey], buffers: list[torch.Tensor]) -> None:
        self._keys, self._buffers = keys, buffers
        self._np = None
        self._accepted = None
        self._signature = tuple((k, b.dtype, b.shape[1:]) for k, b in zip(keys, buffers))

    def _aligned(self, items: TensorDictBase) -> list[torch.Tensor]:
        """The item tensors in buffer order, or a ValueError that says what differs from the stored fields."""
        leaves = field_leaves(items)
        signature = tuple((k, v.dtype, v.shape[1:]) for k, v in leaves)
        if signature == self._signature:
            return [v for _, v in leaves]
        given = {k: (v.dtype, v.shape[1:]) for k, v in leaves}
        if given == self.fields:  # same fields, other order
            by_key = dict(leaves)
            return [by_key[k] for k in self._keys]
        raise ValueError(describe_mismatch(self.fields, given, "the storage's"))

    # -- the Storage protocol --------------------------------------------------------------------------------
    def _fits(self, signature: Any) -> bool:
        """Whether a caller's fields (``signature``: (key, dtype, per-item shape) per field) are ours, in order."""
        if signature is None or self._signature is None:
            return False
        if signature is self._accepted:
            return True
        if signature == self._signature:
            self._accepted = signature
            return True
        return False

    def write(
        self, slots: torch.Tensor, items: TensorDictBase, leaves: Leaves | None = None, signature: Any = None
    ) -> None:
        if leaves is not None and self._fits(signature):
            self.write_values(slots, [v for _, v in leaves])
            return
        if self._signature is None:
            self._allocate(items)
        self.write_values(slots, self._aligned(items))

    def write_item(self, slot: int, item: TensorDictBase, leaves: Leaves, signature: Any = None) -> None:
        if self._fits(signature):
            self.write_one(slot, [v for _, v in leaves])
        else:
            self.write(torch.tensor([slot], dtype=torch.int64), item.unsqueeze(0))

    def write_values(self, slots: torch.Tensor, values: list[torch.Tensor]) -> None:
        """Write tensors already in :attr:`signature` order (the caller has checked the layout)."""
        for buf, value in zip(self._buffers, values):
            if value.device != buf.device:
                value = value.to(buf.device)
            copy_rows_(buf, slots, value)

    def _numpy_views(self) -> list[Any]:
        """Numpy views of the buffers for per-item writes (numpy indexing costs far less than torch's for one
        row); None for a buffer numpy cannot view (not on the CPU, or a dtype numpy lacks). Rebuilt whenever the
        buffers change (new layout, shared memory)."""
        views: list[Any] = []
        for buf in self._buffers:
            try:
                view = buf.numpy() if buf.device.type == "cpu" else None
            except (TypeError, RuntimeError):
                view = None
            # scalar fields take a Python number (value.item()), the others a numpy view of the value
            views.append((view, buf.dim() == 1))
        self._np = views
        return views

    def write_one(self, slot: int, values: list[torch.Tensor]) -> None:
        """Write one item (tensors without a batch dimension, in :attr:`signature` order) to ``slot``."""
        views = self._np if self._np is not None else self._numpy_views()
        for buf, (view, scalar), value in zip(self._buffers, views, values):
            if view is not None:
                try:
                    view[slot] = value.item() if scalar else value.numpy()
                    continue
                except (TypeError, RuntimeError):  # on another device, needs grad, ...: let torch copy it
                    pass
            buf[slot] = value.to(buf.device)

    def _read_tree(
        self, slots: torch.Tensor, into: Mapping[NestedKey, torch.Tensor] | None = None
    ) -> dict[str, Any]:
        """The gathered rows as a nested dict of fresh tensors (those of ``into`` where dtype and shape fit)."""
        if self._signature is None:
            raise RuntimeError("TensorStorage.read before any write")
        targets = self._targets(into, slots.shape[0]) if into is not None else None
        out: dict[str, Any] = {}
        for i, (key, buf) in enumerate(zip(self._keys, self._buffers)):
            dst = None if targets is None else targets[i]
            if dst is not None:
                value = torch.index_select(buf, 0, slots, out=dst)
            else:
                value = buf.index_select(0, slots)
            if len(key) == 1:
                out[key[0]] = value
                continue
            node = out
            for part in key[:-1]:
                node = node.setdefault(part, {})
            node[key[-1]] = value
        return out

    def _targets(self, into: Mapping[NestedKey, torch.Tensor], n: int) -> list[torch.Tensor | None]:
        """Per buffer, the tensor of ``into`` to gather into (None where dtype, shape or device differ); cached
        while the caller passes the same mapping (the table server passes one per client and batch size)."""
        cached = self._into
        if cached is not None and cached[0] is into and cached[1] is self._buffers:
            return cached[2]
        targets: list[torch.Tensor | None] = []
        for key, buf in zip(self._keys, self._buffers):
            dst = into.get(key)
            fits = (
                dst is not None
                and dst.dtype == buf.dtype
                and dst.shape == (n, *buf.shape[1:])
                and dst.device == buf.device
                and dst.is_contiguous()
            )
            targets.append(dst if fits else None)
        self._into = (into, self._buffers, targets)
        return targets

    def read(self, slots: torch.Tensor, out: Mapping[NestedKey, torch.Tensor] | None = None) -> TensorDict:
        if out is None:
            return new_tensordict(self._read_tree(slots), len(slots), self.device)
        tree = self._read_tree(slots, out)
        return new_tensordict(tree, len(slots), self.device)

    def release(self, slots: Sequence[int] | torch.Tensor) -> None:
        """Nothing to do: a slot's old data is simply overwritten by its next write."""

    def clear(self) -> None:
        """Keep the allocation (and its shared memory); the table forgets the items."""

    def share_memory_(self) -> TensorStorage:
        self._shared = True
        for buf in self._buffers:
            buf.share_memory_()
        self._np = None  # the data moved
        return self

    def is_shared(self) -> bool:
        return self._shared

    def state_dict(self, slots: torch.Tensor | None = None) -> dict:
        """The fields and, for ``slots`` (default: all), their rows."""
        if slots is None:
            slots = torch.arange(self.capacity)
        return {
            "capacity": self.capacity,
            "keys": [list(k) for k in self._keys],
            "slots": slots.clone(),
            "data": [b.index_select(0, slots.to(b.device)).cpu() for b in self._buffers],
        }

    def load_state_dict(self, state: dict) -> None:
        if int(state["capacity"]) > self.capacity:
            raise ValueError(f"state has capacity {state['capacity']}, storage only {self.capacity}")
        keys = [tuple(k) for k in state["keys"]]
        if not keys:
            return
        device = self.device if self.device is not None else torch.device("cpu")
        slots = state["slots"].to(device)
        buffers = []
        for rows in state["data"]:
            buf = torch.zeros((self.capacity, *rows.shape[1:]), dtype=rows.dtype, device=device)
            if self._shared:
                buf.share_memory_()
            copy_rows_(buf, slots, rows.to(device))
            buffers.append(buf)
        self._set_layout(keys, buffers)

    def __repr__(self) -> str:
        fields = ", ".join(f"{_fmt(k)}: {tuple(s)} {d}" for k, (d, s) in self.fields.items())
        return f"TensorStorage(capacity={self.capacity}, fields={{{fields}}}, shared={self._shared})"


_new_unsafe = getattr(TensorDict, "_new_unsafe", None)


def copy_rows_(dst: torch.Tensor, index: torch.Tensor, src: torch.Tensor) -> torch.Tensor:
    """``dst.index_copy_(0, index, src)``, moving each row as 8-byte words where the rows allow it.

    ``index_copy_`` copies element by element: for rows of bytes (Atari frames, frame stacks, masks) that is
    several times slower than the same bytes copied as int64 (256 uint8 frames of 84x84 on one core: 1.03 ms
    against 0.16 ms). A bit view changes only how many elements the copy walks, never the bytes.
    """
    if _word_rows(dst) and _word_rows(src) and src.dtype == dst.dtype and src.device == dst.device:
        words = dst.view(dst.shape[0], -1).view(torch.int64)
        words.index_copy_(0, index, src.reshape(src.shape[0], -1).view(torch.int64))
        return dst
    return dst.index_copy_(0, index, src)


def _word_rows(t: torch.Tensor) -> bool:
    """Contiguous rows of a multiple of 8 bytes, 8-byte aligned, of elements narrower than 8 bytes."""
    size = t.element_size()
    return (
        t.dim() >= 2
        and size < 8
        and t.is_contiguous()
        and (t[0].numel() * size) % 8 == 0
        and (t.storage_offset() * size) % 8 == 0
    )


def new_tensordict(tree: dict[str, Any], n: int, device: torch.device | None = None) -> TensorDict:
    """A TensorDict [n] from a nested dict of tensors that all have ``n`` rows (and live on ``device`` if one
    is given), built without re-validating every value (the caller made them)."""
    if _new_unsafe is not None:
        return _new_unsafe(tree, batch_size=torch.Size([n]), device=device)
    return TensorDict(tree, batch_size=[n], device=device)


def field_leaves(items: TensorDictBase) -> list[tuple[NestedKey, torch.Tensor]]:
    """The (nested key as a tuple, tensor) pairs of a TensorDict's leaves, depth first in key order."""
    out: list[tuple[NestedKey, torch.Tensor]] = []
    _walk(items, (), out)
    return out


def _walk(items: TensorDictBase, prefix: NestedKey, out: list[tuple[NestedKey, torch.Tensor]]) -> None:
    # A plain recursive walk over items() is several times cheaper than items(include_nested=True, ...).
    for key, value in items.items():
        if isinstance(value, torch.Tensor):
            out.append(((*prefix, key), value))
        else:
            _walk(value, (*prefix, key), out)


def describe_mismatch(
    expected: dict[NestedKey, tuple[torch.dtype, torch.Size]],
    given: dict[NestedKey, tuple[torch.dtype, torch.Size]],
    whose: str = "the table's",
) -> str:
    """A readable list of the differences between two field layouts (field -> (dtype, per-item shape))."""
    problems = [f"missing field {_fmt(key)}" for key in expected.keys() - given.keys()]
    problems += [f"unexpected field {_fmt(key)}" for key in given.keys() - expected.keys()]
    for key in expected.keys() & given.keys():
        (edt, esh), (gdt, gsh) = expected[key], given[key]
        if edt != gdt:
            problems.append(f"field {_fmt(key)} has dtype {gdt}, expected {edt}")
        if esh != gsh:
            problems.append(f"field {_fmt(key)} has per-item shape {tuple(gsh)}, expected {tuple(esh)}")
    return f"items do not match {whose} fields: " + "; ".join(sorted(problems))


def _fmt(key: NestedKey) -> str:
    return repr(key[0]) if len(key) == 1 else repr(key)
