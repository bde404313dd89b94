"""Frame-deduplicated storage for stacked-frame transitions (Atari), as rlpyt's frame buffers do.

A transition with 4-frame stacks holds 8 frames (28 KB at 84x84), but consecutive transitions of one env share all
but one of them. `FrameStackStorage` keeps every frame once (about 7 KB per transition) and rebuilds the stacks
at read time with one `index_select` over the frame pool.

Frames are identified by (stream, position). `StreamIndexer` numbers a vectorised env's steps so that:
- ``"stream"``: int64, which env (plus an offset when several samplers share a table);
- ``"step"``: int64, the position of the *newest* frame of ``observation``; the stack covers positions
  ``step - S + 1 .. step``;
- ``("next", "step")``: the same for ``("next", "observation")``.
Positions grow by 1 per env step and jump by S after an episode ends, so the first stack of a new episode lies on
S fresh positions: its padding frames (whatever the env used: zeros, copies of the first frame) are stored as they
were produced and no frame of an earlier episode can enter it. An n-step item simply has
``("next", "step") = step + m``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase

from .frames_item import _MAX_STREAM, _NO_KEY, _STREAM_SHIFT, _ZERO, FrameItemPath, _Views
from .storage import Leaves, TensorStorage, copy_rows_, new_tensordict

__all__ = ["FrameStackStorage", "StreamIndexer"]

NestedKey = str | tuple[str, ...]

_SMALL_RELEASE = 8  # releases of up to this many slots run in plain Python over numpy views


def _as_tuple(key: NestedKey) -> tuple[str, ...]:
    return (key,) if isinstance(key, str) else tuple(key)


def _step_flag(nxt: TensorDictBase, key: str, b: int) -> torch.Tensor:
    value = nxt.get(key, None)
    return torch.zeros(b, dtype=torch.bool) if value is None else value.reshape(b).bool()


class StreamIndexer:
    """Adds the ``"stream"``, ``"step"`` and ``("next", "step")`` keys that `FrameStackStorage` needs.

    Call it on each vectorised step (same-step autoreset: at a done step ``("next", "observation")`` is the final
    observation) before `NStepWriter.add`, which carries ``stream``/``step`` from the first step of an item and
    ``("next", "step")`` from its last.
    """

    def __init__(self, num_envs: int, stack: int, first_stream: int = 0) -> None:
        if num_envs < 1 or stack < 1 or first_stream < 0:
            raise ValueError(
                f"need num_envs >= 1, stack >= 1, first_stream >= 0; got {num_envs}, {stack}, {first_stream}"
            )
        if first_stream + num_envs > _MAX_STREAM:
            raise ValueError(f"stream ids must stay below {_MAX_STREAM}")
        self.num_envs, self.stack, self.first_stream = int(num_envs), int(stack), int(first_stream)
        self._position = torch.full((self.num_envs,), self.stack - 1, dtype=torch.int64)

    def __call__(self, step: TensorDictBase, env_ids: torch.Tensor | None = None) -> TensorDictBase:
        """Set the index keys on ``step`` (in place, also returned) and advance the counters."""
        b = step.batch_size[0]
        rows = torch.arange(self.num_envs) if env_ids is None else torch.as_tensor(env_ids, dtype=torch.int64)
        if len(rows) != b:
            raise ValueError(f"step batch {b} != {len(rows)} envs (pass env_ids for a subset)")
        nxt = step.get("next")
        ended = (
            _step_flag(nxt, "terminated", b) | _step_flag(nxt, "truncated", b) | _step_flag(nxt, "done", b)
        )
        pos = self._position[rows]
        step.set("stream", rows + self.first_stream)
        step.set("step", pos.clone())
        step.set(("next", "step"), pos + 1)
        self._position[rows] = pos + 1 + self.stack * ended.long()
        return step

    def new_episode(self, env_ids: torch.Tensor | None = None) -> None:
        """Start fresh positions for envs reset by hand (not through a done step)."""
        rows = torch.arange(self.num_envs) if env_ids is None else torch.as_tensor(env_ids, dtype=torch.int64)
        self._position[rows] += self.stack

    def state_dict(self) -> dict[str, Any]:
        return {
            "num_envs": self.num_envs,
            "stack": self.stack,
            "first_stream": self.first_stream,
            "position": self._position.clone(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("num_envs", "stack", "first_stream"):
            if state[key] != getattr(self, key):
                raise ValueError(f"checkpoint {key}={state[key]!r} does not match {getattr(self, key)!r}")
        self._position = state["position"].clone()


class FrameStackStorage(FrameItemPath):
    """A `Storage` that keeps each frame of stacked observations once.

    Items (batch [N]) need ``observation`` and ``("next", "observation")`` of shape [N, S, H, W] (S, H, W and the
    dtype come from the first write) and the int keys ``"stream"``, ``"step"``, ``("next", "step")`` described in
    the module docstring (`StreamIndexer` makes them). All other fields go to a plain `TensorStorage`.

    Frames live in a pool of ``frame_capacity`` slots with reference counts: a frame is freed when the last item
    using it is released, so frames are never overwritten while an item needs them, whatever the remover. Live
    items need about one frame each plus about one per episode (S per episode when the env pads with non-zero
    frames; all-zero frames share one permanent slot) plus S + n per stream. If the pool runs out, `write` raises
    (and changes nothing) instead of dropping frames. Every read also checks each frame's (stream, position) stamp.

    A small per-stream cache of the latest frame slots finds the frames already stored (the previous item's
    stack); it covers ``cache_window`` positions per stream, so keep n + S below it.
    """

    def __init__(
        self,
        capacity: int,
        frame_capacity: int | None = None,
        *,
        obs_key: NestedKey = "observation",
        next_obs_key: NestedKey = ("next", "observation"),
        stream_key: NestedKey = "stream",
        step_key: NestedKey = "step",
        next_step_key: NestedKey = ("next", "step"),
        cache_streams: int = 1024,
        cache_window: int = 64,
        check_writes: bool = False,
        example: TensorDictBase | None = None,
    ) -> None:
        """``frame_capacity`` default: capacity + capacity // 64 + 1024 (enough for a mean episode of >= 64
        steps with zero padding, >= 256 with non-zero padding). ``check_writes`` compares every frame found in the
        pool with the item's own copy and raises on a mismatch (a wrong ``step`` numbering): a debugging aid."""
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = int(capacity)
        self.frame_capacity = int(
            frame_capacity if frame_capacity is not None else capacity + capacity // 64 + 1024
        )
        if self.frame_capacity < 1:
            raise ValueError(f"frame_capacity must be >= 1, got {self.frame_capacity}")
        self.obs_key, self.next_obs_key = obs_key, next_obs_key
        self.stream_key, self.step_key, self.next_step_key = stream_key, step_key, next_step_key
        self.cache_streams, self.cache_window = int(cache_streams), int(cache_window)
        self.check_writes = check_writes
        self._shared = False
        self._small = TensorStorage(self.capacity)
        self.stack = 0  # S, from the first write
        self._frames: torch.Tensor | None = None  # [frame_capacity + 1, H, W]; slot 0 = zero frame
        self._frame_key: torch.Tensor | None = None  # [F] int64 stamp stream << 44 | position
        self._refcount: torch.Tensor | None = None  # [F] int32 items using the frame
        self._free: torch.Tensor | None = None  # [F] int32 ring queue of free frame slots
        self._free_ptr = torch.zeros(2, dtype=torch.int64)  # (head, count) of the free queue
        self._index: torch.Tensor | None = None  # [capacity, 2S] int32 frame slots of obs and next obs stacks
        self._live = torch.zeros(self.capacity, dtype=torch.bool)
        self._cache = torch.full((self.cache_streams, self.cache_window), -1, dtype=torch.int64)
        self._np: _Views | None = None  # numpy views of the pool's tensors for per-item writes and releases
        self._item_layout: tuple[Any, ...] = (None, None, None, None)  # cache of _item_plan
        if example is not None:
            if example.batch_dims == 0:
                example = example.unsqueeze(0)
            self._allocate(example)

    # ------------------------------------------------------------------ layout
    @property
    def allocated(self) -> bool:
        return self._frames is not None

    @property
    def num_frames(self) -> int:
        """Frames in use (excluding the shared zero frame)."""
        if self._free is None:
            return 0
        return self.frame_capacity - int(self._free_ptr[1])

    def nbytes(self) -> int:
        """Bytes held by every tensor of this storage (the frame pool counted whole)."""
        tensors = [
            self._frames,
            self._frame_key,
            self._refcount,
            self._free,
            self._index,
            self._live,
            self._cache,
        ]
        return sum(t.numel() * t.element_size() for t in tensors if t is not None) + self._small.nbytes()

    def bytes_per_item(self) -> float:
        """`nbytes` / capacity: the memory cost of one transition at full capacity."""
        return self.nbytes() / self.capacity

    def _allocate(self, items: TensorDictBase) -> None:
        obs = items.get(self.obs_key)
        if obs.dim() != 4:
            raise ValueError(f"{self.obs_key!r} must be [N, S, H, W] stacks, got shape {tuple(obs.shape)}")
        if not self._small.allocated:
            self._small.write(torch.zeros(0, dtype=torch.int64), self._small_fields(items[:0]))
        self._allocate_frames(obs.shape[1], tuple(obs.shape[2:]), obs.dtype)

    def _allocate_frames(self, stack: int, shape: tuple[int, ...], dtype: torch.dtype) -> None:
        f = self.frame_capacity + 1
        self.stack = int(stack)
        self._frames = torch.empty((f, *shape), dtype=dtype)  # pages are touched only when frames are written
        self._frames[_ZERO].zero_()
        self._frame_key = torch.empty(f, dtype=torch.int64)
        self._refcount = torch.empty(f, dtype=torch.int32)
        self._free = torch.empty(self.frame_capacity, dtype=torch.int32)
        self._index = torch.zeros((self.capacity, 2 * self.stack), dtype=torch.int32)
        self._np = None
        self._reset_pool()
        if self._shared:
            self.share_memory_()

    def _views(self) -> _Views:
        if self._np is None:
            self._np = _Views(self)
        return self._np

    def _reset_pool(self) -> None:
        self._frame_key.fill_(_NO_KEY)
        self._refcount.zero_()
        torch.arange(1, self.frame_capacity + 1, out=self._free)
        self._free_ptr.copy_(torch.tensor([0, self.frame_capacity]))
        self._cache.fill_(-1)
        self._live.zero_()

    def _small_fields(self, items: TensorDictBase) -> TensorDictBase:
        return items.exclude(self.obs_key, self.next_obs_key)

    # ------------------------------------------------------------------ free queue of frame slots
    def _pop(self, k: int) -> torch.Tensor:
        head, count = (int(v) for v in self._free_ptr)
        if k > count:
            raise RuntimeError(
                f"FrameStackStorage is out of frame slots: this write needs {k} new frames, {count} of "
                f"{self.frame_capacity} are free. Live items hold the rest (about one frame per item plus the "
                "first stack of each episode); raise frame_capacity."
            )
        idx = (head + torch.arange(k)) % self.frame_capacity
        self._free_ptr.copy_(torch.tensor([(head + k) % self.frame_capacity, count - k]))
        return self._free.index_select(0, idx).long()

    def _push(self, slots: torch.Tensor) -> None:
        head, count = (int(v) for v in self._free_ptr)
        idx = (head + count + torch.arange(len(slots))) % self.frame_capacity
        self._free.index_copy_(0, idx, slots.to(torch.int32))
        self._free_ptr[1] = count + len(slots)

    # ------------------------------------------------------------------ keys
    def _keys(self, items: TensorDictBase, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Frame stamps [n, 2S] of each item's obs and next-obs stack, and the positions they encode."""
        stream = items.get(self.stream_key).reshape(n).long()
        step = items.get(self.step_key).reshape(n).long()
        next_step = items.get(self.next_step_key).reshape(n).long()
        offsets = torch.arange(self.stack) - (self.stack - 1)
        pos = torch.cat([step[:, None] + offsets, next_step[:, None] + offsets], 1)
        return (stream[:, None] << _STREAM_SHIFT) + pos, pos

    def _validate_keys(self, items: TensorDictBase, n: int) -> None:
        for key in (self.stream_key, self.step_key, self.next_step_key):
            value = items.get(key, None)
            if value is None:
                raise KeyError(
                    f"FrameStackStorage items need the key {key!r} (stream identity of the frames); "
                    "add it with replay.frames.StreamIndexer before NStepWriter"
                )
            if value.dtype.is_floating_point or value.numel() != n:
                raise ValueError(
                    f"{key!r} must be one integer per item, got {value.dtype} {tuple(value.shape)}"
                )
        stream = items.get(self.stream_key).reshape(n)
        if bool(((stream < 0) | (stream >= _MAX_STREAM)).any()):
            raise ValueError(f"stream ids must be in [0, {_MAX_STREAM})")
        if bool((items.get(self.next_step_key).reshape(n) <= items.get(self.step_key).reshape(n)).any()):
            raise ValueError(f"{self.next_step_key!r} must be greater than {self.step_key!r}")

    def _validate_frames(self, items: TensorDictBase, n: int) -> None:
        shape = (n, self.stack, *self._frames.shape[1:])
        for key in (self.obs_key, self.next_obs_key):
            value = items.get(key)
            if tuple(value.shape) != shape or value.dtype != self._frames.dtype:
                raise ValueError(
                    f"{key!r} must be {shape} {self._frames.dtype}, got {tuple(value.shape)} {value.dtype}"
                )

    # ------------------------------------------------------------------ Storage protocol
    def write(
        self, slots: torch.Tensor, items: TensorDictBase, leaves: Leaves | None = None, signature: Any = None
    ) -> None:
        """Store the items; only frames not already in the pool are copied (from the item's own stacks)."""
        slots = torch.as_tensor(slots, dtype=torch.int64).reshape(-1)
        n = len(slots)
        if items.batch_size != torch.Size([n]):
            raise ValueError(f"items batch {tuple(items.batch_size)} != {n} slots")
        self._validate_keys(items, n)
        if self._frames is None:
            self._allocate(items)
        self._validate_frames(items, n)
        if n == 0:
            return
        if bool(self._live.index_select(0, slots).any()):
            raise ValueError("write to a live slot: release it first")
        self._small.write(slots, self._small_fields(items))

        keys, pos = self._keys(items, n)
        flat = keys.reshape(-1)
        uniq, inv = torch.unique(flat, return_inverse=True)
        # first (item * 2S + column) holding each distinct frame: where its pixels come from if it is new
        first = torch.full(uniq.shape, flat.numel(), dtype=torch.int64)
        first.scatter_reduce_(0, inv, torch.arange(flat.numel()), "amin")
        pos_u = pos.reshape(-1).index_select(0, first)
        stream_u = (uniq - pos_u) >> _STREAM_SHIFT
        crow, ccol = stream_u % self.cache_streams, pos_u % self.cache_window
        cached = self._cache[crow, ccol]
        safe = cached.clamp(min=0)
        hit = (cached >= 0) & (self._frame_key[safe] == uniq) & (self._refcount[safe] > 0)
        miss = (~hit).nonzero().squeeze(1)

        source = self._source_frames(items, first.index_select(0, miss), n)  # [k, H, W]
        nonzero = source.flatten(1).any(1)  # (reshape(0, -1) fails when every frame is already stored)
        new = torch.full((len(miss),), _ZERO, dtype=torch.int64)
        stored = nonzero.nonzero().squeeze(1)
        new[stored] = self._pop(len(stored))  # raises before any frame changes
        if self.check_writes:
            candidates = self._frames.index_select(0, safe)
            candidates[miss] = source
            self._check_consistent(items, candidates, inv, n)
        copy_rows_(self._frames, new[stored], source.index_select(0, stored))
        self._frame_key.index_copy_(0, new[stored], uniq[miss][stored])

        slot_u = cached.clone()
        slot_u[miss] = new
        self._cache[crow, ccol] = slot_u
        frames = slot_u[inv]
        self._refcount.index_add_(0, frames, torch.ones_like(frames, dtype=torch.int32))
        self._index.index_copy_(0, slots, frames.reshape(n, 2 * self.stack).to(torch.int32))
        self._live[slots] = True

    def _source_frames(self, items: TensorDictBase, flat_idx: torch.Tensor, n: int) -> torch.Tensor:
        """Frames at flat (item * 2S + column) positions; columns < S are from obs, the rest from next obs."""
        s = self.stack
        item, col = flat_idx // (2 * s), flat_idx % (2 * s)
        out = torch.empty((len(flat_idx), *self._frames.shape[1:]), dtype=self._frames.dtype)
        for key, sel in ((self.obs_key, col < s), (self.next_obs_key, col >= s)):
            where = sel.nonzero().squeeze(1)
            if len(where):
                stacks = items.get(key).reshape(n * s, *self._frames.shape[1:])
                copy_rows_(out, where, stacks.index_select(0, item[where] * s + col[where] % s))
        return out

    def _check_consistent(
        self, items: TensorDictBase, candidates: torch.Tensor, inv: torch.Tensor, n: int
    ) -> None:
        """Every frame of every item must equal the one frame chosen for its (stream, position)."""
        s = self.stack
        chosen = candidates.index_select(0, inv).reshape(n, 2 * s, *candidates.shape[1:])
        if not (
            torch.equal(chosen[:, :s], items.get(self.obs_key))
            and torch.equal(chosen[:, s:], items.get(self.next_obs_key))
        ):
            raise self._numbering_error()

    def read(self, slots: torch.Tensor, out: Mapping[NestedKey, torch.Tensor] | None = None) -> TensorDict:
        """Fresh tensors (``out`` is not used); both stacks are gathered with one `index_select` each (the bookkeeping checks run in
        numpy, whose per-call cost is far below torch's at these sizes)."""
        slots = torch.as_tensor(slots, dtype=torch.int64).reshape(-1)
        n = len(slots)
        if self._frames is None:
            raise RuntimeError("FrameStackStorage.read before any write")
        v = self._views()
        slots_np = slots.numpy()
        if n and slots_np.min() < 0:  # numpy would wrap a negative index around
            raise IndexError(f"FrameStackStorage.read: negative slot {int(slots_np.min())}")
        if not v.live[slots_np].all():
            raise KeyError("FrameStackStorage.read of a slot that holds no item")
        tree = self._small._read_tree(slots)
        index = v.index[slots_np]  # [n, 2S] int32 frame slots
        s, shape = self.stack, self._frames.shape[1:]
        offsets = np.arange(1 - s, 1)
        stream = _leaf(tree, self.stream_key).numpy().reshape(n, 1).astype(np.int64) << _STREAM_SHIFT
        step = _leaf(tree, self.step_key).numpy().reshape(n, 1).astype(np.int64)
        next_step = _leaf(tree, self.next_step_key).numpy().reshape(n, 1).astype(np.int64)
        expected = np.concatenate([stream + (step + offsets), stream + (next_step + offsets)], 1)
        if not ((v.frame_key[index] == expected) | (index == _ZERO)).all():
            raise RuntimeError(
                "FrameStackStorage: a frame of a live item was overwritten (the pool was used concurrently "
                "without the table's lock, or its state is corrupt); refusing to return wrong frames"
            )
        obs_idx = torch.from_numpy(np.ascontiguousarray(index[:, :s]).reshape(-1))
        next_idx = torch.from_numpy(np.ascontiguousarray(index[:, s:]).reshape(-1))
        _set_leaf(tree, self.obs_key, self._frames.index_select(0, obs_idx).view(n, s, *shape))
        _set_leaf(tree, self.next_obs_key, self._frames.index_select(0, next_idx).view(n, s, *shape))
        return new_tensordict(tree, n, self._small.device)

    def release(self, slots: Sequence[int] | torch.Tensor) -> None:
        """Drop the items' references; frames no item uses any more go back to the free queue."""
        if self._frames is None:
            return
        if isinstance(slots, list) and len(slots) <= _SMALL_RELEASE:
            return self._release_list(slots)
        slots = torch.as_tensor(slots, dtype=torch.int64).reshape(-1)
        if len(slots) <= _SMALL_RELEASE:
            return self._release_list(slots.tolist())
        slots = slots[self._live.index_select(0, slots)].unique()
        if len(slots) == 0:
            return
        frames = self._index.index_select(0, slots).reshape(-1).long()
        self._refcount.index_add_(0, frames, torch.full_like(frames, -1, dtype=torch.int32))
        self._live[slots] = False
        candidates = frames.unique()
        freed = candidates[(self._refcount.index_select(0, candidates) == 0) & (candidates != _ZERO)]
        self._frame_key.index_fill_(0, freed, _NO_KEY)
        self._push(freed)

    def clear(self) -> None:
        """Forget every item and frame; keep the allocation (and its shared memory)."""
        if self._frames is not None:
            self._reset_pool()

    def share_memory_(self) -> FrameStackStorage:
        """Move the pool, indices and fields to shared memory (if not allocated yet, allocate there later)."""
        self._shared = True
        self._np = None  # the data moves
        for t in (self._frames, self._frame_key, self._refcount, self._free, self._index):
            if t is not None:
                t.share_memory_()
        for t in (self._free_ptr, self._live, self._cache):
            t.share_memory_()
        self._small.share_memory_()
        return self

    def is_shared(self) -> bool:
        return self._shared

    def state_dict(self) -> dict[str, Any]:
        """Live items only, with their slot numbers; the frames they use are compacted (the pool is not saved)."""
        state: dict[str, Any] = {
            "capacity": self.capacity,
            "config": self._config(),
            "stack": self.stack,
            "slots": None,
        }
        if self._frames is None:
            return state
        slots = self._live.nonzero().squeeze(1)
        index = self._index.index_select(0, slots).long()
        used = index.unique()
        used = used[used != _ZERO]
        remapped = torch.where(index == _ZERO, 0, torch.searchsorted(used, index) + 1)
        state.update(
            slots=slots,
            index=remapped,
            frames=self._frames.index_select(0, used),
            frame_key=self._frame_key.index_select(0, used),
            small=self._small.state_dict(slots),
        )
        return state

    def _config(self) -> dict[str, Any]:
        return {
            "frame_capacity": self.frame_capacity,
            "obs_key": self.obs_key,
            "next_obs_key": self.next_obs_key,
            "stream_key": self.stream_key,
            "step_key": self.step_key,
            "next_step_key": self.next_step_key,
            "cache_streams": self.cache_streams,
            "cache_window": self.cache_window,
            "check_writes": self.check_writes,
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> FrameStackStorage:
        """An empty storage configured as the one that made ``state`` (`Table.restore` calls this)."""
        return cls(int(state["capacity"]), **state["config"])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore live items at their slot numbers; frames are packed at the start of the pool."""
        if int(state["capacity"]) > self.capacity:
            raise ValueError(f"state has capacity {state['capacity']}, storage only {self.capacity}")
        if state["slots"] is None:
            self.clear()
            return
        frames, index, slots = state["frames"], state["index"], state["slots"]
        if len(frames) > self.frame_capacity:
            raise ValueError(f"state holds {len(frames)} frames, frame_capacity is {self.frame_capacity}")
        self._small.load_state_dict(state["small"])
        stack, shape = int(state["stack"]), tuple(frames.shape[1:])
        if self._frames is None or tuple(self._frames.shape[1:]) != shape or self.stack != stack:
            self._allocate_frames(stack, shape, frames.dtype)
        self._reset_pool()
        u = len(frames)
        self._frames[1 : u + 1] = frames
        self._frame_key[1 : u + 1] = state["frame_key"]
        self._index.index_copy_(0, slots, index.to(torch.int32))
        self._refcount.index_add_(0, index.reshape(-1), torch.ones(index.numel(), dtype=torch.int32))
        self._live[slots] = True
        torch.arange(u + 1, self.frame_capacity + 1, out=self._free[: self.frame_capacity - u])
        self._free_ptr.copy_(torch.tensor([0, self.frame_capacity - u]))

    def __repr__(self) -> str:
        shape = None if self._frames is None else (self.stack, *self._frames.shape[1:])
        return (
            f"FrameStackStorage(capacity={self.capacity}, frame_capacity={self.frame_capacity}, stack_shape={shape}, "
            f"items={int(self._live.sum())}, frames={self.num_frames}, shared={self._shared})"
        )


def _leaf(tree: dict[str, Any], key: NestedKey) -> torch.Tensor:
    for part in _as_tuple(key):
        tree = tree[part]
    return tree  # type: ignore[return-value]


def _set_leaf(tree: dict[str, Any], key: NestedKey, value: torch.Tensor) -> None:
    *path, last = _as_tuple(key)
    for part in path:
        tree = tree.setdefault(part, {})
    tree[last] = value
