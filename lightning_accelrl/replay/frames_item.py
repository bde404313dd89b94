"""The per-item path of :class:`~lightning_accelrl.replay.FrameStackStorage` (a part of it, by job): writing and
releasing one transition in plain Python over numpy views of the pool, far below the cost of a vectorised torch op
per call at these sizes. Anything unusual goes through the storage's batched ``write``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDictBase

from lightning_accelrl.replay.storage import Leaves, TensorStorage

_STREAM_SHIFT = 44  # key = stream << 44 | position: 2^19 streams, positions below 2^43
_MAX_STREAM = 1 << (63 - _STREAM_SHIFT)
_NO_KEY = torch.iinfo(torch.int64).min  # frame_key of a free slot (never a real key)
_ZERO = 0  # frame slot 0 holds the all-zero frame forever: padding frames cost nothing


class FrameItemPath:
    """Per-item ``write_item`` and small releases of a frame storage (see the module docstring); they use the
    storage's ``write`` and ``_views``."""

    stack: int
    capacity: int
    frame_capacity: int
    cache_streams: int
    cache_window: int
    check_writes: bool
    obs_key: Any
    next_obs_key: Any
    stream_key: Any
    step_key: Any
    next_step_key: Any
    _small: TensorStorage
    _frames: torch.Tensor | None
    _np: _Views | None
    _item_layout: tuple[Any, ...]

    def _item_plan(self, leaves: list[tuple[tuple, torch.Tensor]], signature: Any) -> Any:
        """Where obs, next obs, stream, step, next step and the small fields sit among an item's leaves, or None
        when the item does not fit this storage's layout as it is. Cached per (caller's signature, layouts)."""
        v = self._views()
        small_sig = self._small.signature
        cached = self._item_layout
        if signature is not None and cached[0] is signature and cached[1] is small_sig and cached[2] is v:
            return cached[3]
        layout = self._layout_of(tuple([k for k, _ in leaves]))
        if layout is not None:
            i_obs, i_next, _, _, _, small_idx, small_keys = layout
            values = [leaves[i][1] for i in small_idx]
            if (
                small_sig is None
                or len(small_sig) != len(values)
                or any(
                    key != k or x.dtype != dtype or x.shape != shape
                    for (key, dtype, shape), k, x in zip(small_sig, small_keys, values)
                )
                or any(
                    tuple(leaves[i][1].shape) != v.frame_shape or leaves[i][1].dtype != v.dtype
                    for i in (i_obs, i_next)
                )
            ):
                layout = None
        if signature is not None:
            self._item_layout = (signature, small_sig, v, layout)
        return layout

    def _layout_of(self, keys: tuple) -> Any:
        where = {k: i for i, k in enumerate(keys)}
        roles = [
            _as_tuple(k)
            for k in (self.obs_key, self.next_obs_key, self.stream_key, self.step_key, self.next_step_key)
        ]
        if not all(r in where for r in roles):
            return None
        small = [i for i, k in enumerate(keys) if k not in roles[:2]]
        return (*[where[r] for r in roles], small, tuple(keys[i] for i in small))

    def write_item(
        self,
        slot: int,
        item: TensorDictBase,
        leaves: Leaves,
        signature: Any = None,
    ) -> None:
        """`write` of one item given without a batch dimension (``leaves``: its (key, tensor) fields; the
        caller may pass a ``signature`` object that stands for their keys, dtypes and shapes, so the layout
        check runs once per signature), in plain Python over numpy views: an insert of one transition touches a
        handful of numbers and one new frame, far below the cost of a vectorised torch op each. Anything unusual
        goes through `write`."""
        if self._frames is None:
            return self._write_general(slot, item)
        layout = self._item_plan(leaves, signature)
        if layout is None:
            return self._write_general(slot, item)
        i_obs, i_next, i_stream, i_step, i_next_step, small_idx, _ = layout
        try:
            stream, step, next_step = (
                leaves[i_stream][1].item(),
                leaves[i_step][1].item(),
                leaves[i_next_step][1].item(),
            )
        except (RuntimeError, ValueError):  # not one number each
            return self._write_general(slot, item)
        v = self._np
        if (
            type(stream) is not int
            or type(step) is not int
            or type(next_step) is not int
            or not 0 <= stream < _MAX_STREAM
            or next_step <= step
            or v.live[slot]
        ):
            return self._write_general(slot, item)  # raises the error that applies
        obs, nxt = leaves[i_obs][1], leaves[i_next][1]
        if not (obs.is_cpu and nxt.is_cpu):
            return self._write_general(slot, item)
        self._small.write_one(slot, [leaves[i][1] for i in small_idx])
        self._place_frames(slot, stream, step, next_step, obs, nxt)

    def _place_frames(
        self, slot: int, stream: int, step: int, next_step: int, obs: torch.Tensor, nxt: torch.Tensor
    ) -> None:
        """Point ``slot``'s index row at the item's 2S frames, storing the ones the pool does not hold yet."""
        v = self._np
        s, check = self.stack, self.check_writes
        base = stream << _STREAM_SHIFT
        crow = stream % self.cache_streams
        frame_key, refcount, cache, window = v.frame_key, v.refcount, v.cache, self.cache_window
        order = [base + step - s + 1 + j for j in range(s)] + [base + next_step - s + 1 + j for j in range(s)]
        cols: dict[int, int] = {}  # frame key -> its first column (item frame 0 .. 2S - 1)
        for c, key in enumerate(order):
            if key not in cols:
                cols[key] = c
        pixels = [None, None]  # numpy views of obs and next obs, made when needed

        def frame(c: int) -> Any:
            j = c >= s
            if pixels[j] is None:
                pixels[j] = (nxt if j else obs).detach().numpy()
            return pixels[j][c - s if j else c]

        found: dict[int, int] = {}  # frame key -> frame slot
        missing: list[tuple[int, Any]] = []  # (frame key, pixels) of frames not in the pool
        for key, c in cols.items():
            cached = cache.item(crow, (key - base) % window)
            if cached >= 0 and frame_key.item(cached) == key and refcount.item(cached) > 0:
                if check and not np.array_equal(v.frames[cached], frame(c)):
                    raise self._numbering_error()
                found[key] = cached
            else:
                src = frame(c)
                if src.any():
                    missing.append((key, src))
                else:
                    found[key] = _ZERO
        if check:  # two columns of this item with one (stream, position) must hold the same frame
            for c, key in enumerate(order):
                if cols[key] != c and not np.array_equal(frame(c), frame(cols[key])):
                    raise self._numbering_error()
        if missing:
            fresh = v.pop(len(missing), self.frame_capacity)  # raises before any frame changes
            frames = v.frames
            for (key, src), f in zip(missing, fresh):
                frames[f] = src
                frame_key[f] = key
                found[key] = f
        for key in cols:
            cache[crow, (key - base) % window] = found[key]
        row = [found[key] for key in order]
        v.index[slot] = row
        for f in row:
            refcount[f] += 1
        v.live[slot] = True

    def _numbering_error(self) -> ValueError:
        return ValueError(
            "two frames with the same (stream, position) differ: the items' "
            f"{self.step_key!r} numbering is wrong (it must jump by >= S after an episode ends)"
        )

    def _write_general(self, slot: int, item: TensorDictBase) -> None:
        self.write(torch.tensor([slot], dtype=torch.int64), item.unsqueeze(0))

    def _release_list(self, slots: list[int]) -> None:
        """`release` of a few slots given as a list, in plain Python over numpy views (frames are freed in the
        same order)."""
        if self._frames is None:
            return
        v = self._views()
        live, index, refcount = v.live, v.index, v.refcount
        frames: list[int] = []
        for slot in sorted(set(slots)):
            if live[slot]:
                row = index[slot].tolist()
                for f in row:
                    refcount[f] -= 1
                live[slot] = False
                frames += row
        freed = [f for f in sorted(set(frames)) if f != _ZERO and refcount.item(f) == 0]
        if freed:
            frame_key = v.frame_key
            for f in freed:
                frame_key[f] = _NO_KEY
            v.push(freed, self.frame_capacity)


def _as_tuple(key: Any) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)


class _Views:
    """Numpy views of a `FrameStackStorage`'s tensors (same memory), for its per-item paths."""

    def __init__(self, storage: Any) -> None:
        self.frames = storage._frames.numpy()
        self.frame_shape = (storage.stack, *self.frames.shape[1:])
        self.dtype = storage._frames.dtype
        self.frame_key = storage._frame_key.numpy()
        self.refcount = storage._refcount.numpy()
        self.free = storage._free.numpy()
        self.free_ptr = storage._free_ptr.numpy()  # (head, count) of the free queue
        self.index = storage._index.numpy()
        self.live = storage._live.numpy()
        self.cache = storage._cache.numpy()

    def pop(self, k: int, capacity: int) -> list[int]:
        head, count = self.free_ptr.tolist()
        if k > count:
            raise RuntimeError(
                f"FrameStackStorage is out of frame slots: this write needs {k} new frames, {count} of "
                f"{capacity} are free. Live items hold the rest (about one frame per item plus the "
                "first stack of each episode); raise frame_capacity."
            )
        free = self.free
        out = [free.item((head + i) % capacity) for i in range(k)]
        self.free_ptr[0] = (head + k) % capacity
        self.free_ptr[1] = count - k
        return out

    def push(self, slots: list[int], capacity: int) -> None:
        head, count = self.free_ptr.tolist()
        free = self.free
        end = head + count
        for i, f in enumerate(slots):
            free[(end + i) % capacity] = f
        self.free_ptr[1] = count + len(slots)
