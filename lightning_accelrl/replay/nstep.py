"""n-step transitions built at insert time, vectorised over a batch of envs.

`NStepWriter.add` takes one vectorised env step (TorchRL keys) and returns the transitions that became complete,
ready to insert into a replay `Table`. Building them before insertion keeps the table a plain store of independent
items (any selector/remover works) and lets the learner bootstrap with one stored discount per item:

    target = ("next", "reward") + bootstrap_discount * max_a Q(("next", "observation"), a)

Key conventions of an emitted item (batch [M]):
- root keys (``observation``, ``action`` and every other root key, e.g. ``stream``/``step`` indices or action
  masks) are copied from the *starting* step t;
- every ``("next", ...)`` key (``observation``, ``terminated``, ``truncated``, ``done`` and extras such as
  ``("next", "step")``) comes from the *last* step t+m-1, except ``("next", "reward")`` = sum_{k<m} gamma^k r_{t+k};
- ``bootstrap_discount`` = gamma^m, or 0 if the last step terminated. Truncation (a time limit) bootstraps from the
  true final observation, unless the writer is built with ``bootstrap_truncated=False``: then a truncated step
  ends the return like a terminal one (discount 0), as replay buffers stored time limits before Gymnasium's
  terminated/truncated split (Stable-Baselines3's ``handle_timeout_termination=False``). m = n, or less when the
  episode ended (terminated or truncated) before n steps.
"""

from __future__ import annotations

from typing import Any

import torch
from tensordict import TensorDict, TensorDictBase

from lightning_accelrl.replay.storage import copy_rows_, field_leaves, new_tensordict

__all__ = ["NStepWriter"]

Key = tuple[str, ...]

_FLAGS = ("terminated", "truncated", "done")


class NStepWriter:
    """Turns a stream of vectorised env steps into n-step transitions.

    Steps must follow "same-step" autoreset semantics: at a done step ``("next", "observation")`` is the true final
    observation and the next call's ``observation`` for that env is the reset observation. (A gymnasium NEXT_STEP
    autoreset step, whose observation is a final observation, must not be passed in.)

    Ring buffers [n, num_envs, ...] are allocated on the first call from that step's keys, shapes and dtypes.
    Each env keeps its own ring position, so `add` also accepts a subset of envs (``env_ids``), as an envpool-style
    async batch or an alternating sampler produces.
    """

    def __init__(self, n: int, gamma: float, num_envs: int, bootstrap_truncated: bool = True) -> None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"gamma must be in [0, 1], got {gamma}")
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.n = int(n)
        self.gamma = float(gamma)
        self.num_envs = int(num_envs)
        self.bootstrap_truncated = bool(bootstrap_truncated)
        # discount[k, k'] = gamma^(k'-k) for k' >= k: the return of every start in a window is one matmul.
        ar = torch.arange(self.n, dtype=torch.float64)
        expo = ar[None, :] - ar[:, None]
        self._discount = torch.where(expo >= 0, self.gamma ** expo.clamp(min=0), torch.zeros(()))
        self._gamma_pow = self.gamma ** torch.arange(self.n + 1, dtype=torch.float64)
        # Plain tensors per leaf, gathered/scattered with index_select/index_copy_ (TensorDict fancy indexing is
        # 10-100x slower on CPU): root keys [n * num_envs, ...] (flat: slot * num_envs + env), and the "next" keys
        # of each env's latest step [num_envs, ...] (for flush).
        self._ring: dict[Key, torch.Tensor] | None = None
        self._last_next: dict[Key, torch.Tensor] | None = None
        self._rewards = torch.zeros(self.n, self.num_envs, dtype=torch.float64)
        self._count = torch.zeros(
            self.num_envs, dtype=torch.int64
        )  # pending starts per env (< n between calls)
        self._ptr = torch.zeros(self.num_envs, dtype=torch.int64)  # next ring slot per env
        self._reward_shape: tuple[int, ...] = ()  # trailing reward dims ((), or (1,)), from the first step
        self._reward_dtype = torch.float32
        self._all_rows = torch.arange(self.num_envs)
        self._window = torch.arange(self.n)[:, None]  # window positions k, oldest to newest

    # ------------------------------------------------------------------ public API
    def add(self, step: TensorDict, env_ids: torch.Tensor | None = None) -> TensorDict | None:
        """Record one step of the envs ``env_ids`` (default: all, in order); return completed transitions or None.

        Emitted items are ordered by start time, then env.
        """
        if self.n == 1 and env_ids is None:
            return self._one_step(step)
        rows = self._rows(step, env_ids)
        if self._ring is None:
            self._allocate(step)
        nxt = step.get("next")
        reward = nxt.get("reward")
        if tuple(reward.shape[1:]) != self._reward_shape:
            raise ValueError(
                f"reward trailing shape {tuple(reward.shape[1:])} != first step's {self._reward_shape}"
            )
        terminated = self._ends_return(nxt, len(rows))
        ended = terminated | self._flag(nxt, "truncated", len(rows)) | self._flag(nxt, "done", len(rows))

        pos = self._ptr[rows]
        flat = pos * self.num_envs + rows
        for key, value in field_leaves(step):
            if key[0] != "next":
                copy_rows_(self._ring[key], flat, value)
        next_leaves = dict(field_leaves(nxt))
        for key, buf in self._last_next.items():
            copy_rows_(buf, rows, next_leaves[key])
        self._rewards[pos, rows] = reward.reshape(len(rows)).to(torch.float64)
        count = self._count[rows] + 1  # <= n: between calls every env has < n pending starts

        out = self._emit(rows, pos, count, ended, terminated, nxt)

        self._count[rows] = torch.where(ended, 0, torch.where(count == self.n, self.n - 1, count))
        self._ptr[rows] = (pos + 1) % self.n
        return out

    def _one_step(self, step: TensorDict) -> TensorDict:
        """n = 1: every step is a finished transition; no ring needed (the DQN default, on the hot path)."""
        b = int(step.batch_size[0])
        terminated = self._ends_return(step.get("next"), b)
        fields = {key: value.clone() for key, value in field_leaves(step)}
        reward = fields[("next", "reward")]
        dtype = reward.dtype if reward.dtype.is_floating_point else torch.float32
        fields[("next", "reward")] = reward.to(dtype)
        fields[("bootstrap_discount",)] = ((~terminated).to(dtype) * self.gamma).reshape(reward.shape)
        return _tensordict(fields, b)

    def flush(self, env_ids: torch.Tensor | None = None) -> TensorDict | None:
        """Emit every pending (partial) transition as if its episode were cut here, and forget them.

        Flushed items bootstrap with gamma^m from the latest next observation; their flags are the last step's
        (not done), so only ``bootstrap_discount`` tells that they are shorter than n.
        """
        if self._ring is None:
            return None
        rows = torch.arange(self.num_envs) if env_ids is None else torch.as_tensor(env_ids, dtype=torch.int64)
        count = self._count[rows]
        pos = (self._ptr[rows] - 1) % self.n  # slot of each env's latest step
        nxt = {key: buf.index_select(0, rows) for key, buf in self._last_next.items()}
        no = torch.zeros(len(rows), dtype=torch.bool)
        out = self._emit(rows, pos, count, torch.ones_like(no), no, nxt)
        self._count[rows] = 0
        return out

    def reset(self, env_ids: torch.Tensor | None = None) -> None:
        """Drop pending starts without emitting them (e.g. the sampler reset these envs by hand)."""
        if env_ids is None:
            self._count.zero_()
        else:
            self._count[torch.as_tensor(env_ids, dtype=torch.int64)] = 0

    @property
    def num_pending(self) -> int:
        """Number of started transitions not yet emitted."""
        return int(self._count.sum())

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume mid-episode after a checkpoint (tensors are cloned)."""
        state: dict[str, Any] = {
            "n": self.n,
            "gamma": self.gamma,
            "num_envs": self.num_envs,
            "rewards": self._rewards.clone(),
            "count": self._count.clone(),
            "ptr": self._ptr.clone(),
            "reward_shape": self._reward_shape,
            "reward_dtype": self._reward_dtype,
            "ring": None,
            "last_next": None,
        }
        if self._ring is not None:
            state["ring"] = [[list(k), v.clone()] for k, v in self._ring.items()]
            state["last_next"] = [[list(k), v.clone()] for k, v in self._last_next.items()]
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a `state_dict`; n, gamma and num_envs must match this writer's."""
        for key in ("n", "gamma", "num_envs"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"checkpoint {key}={state[key]!r} does not match this writer's {getattr(self, key)!r}"
                )
        self._rewards = state["rewards"].clone()
        self._count = state["count"].clone()
        self._ptr = state["ptr"].clone()
        self._reward_shape = tuple(state["reward_shape"])
        self._reward_dtype = state["reward_dtype"]
        if state["ring"] is None:
            self._ring = self._last_next = None
        else:
            self._ring = {tuple(k): v.clone() for k, v in state["ring"]}
            self._last_next = {tuple(k): v.clone() for k, v in state["last_next"]}

    # ------------------------------------------------------------------ internals
    def _rows(self, step: TensorDict, env_ids: torch.Tensor | None) -> torch.Tensor:
        if step.batch_dims != 1:
            raise ValueError(f"a step must have batch [num_envs], got {tuple(step.batch_size)}")
        if env_ids is None:
            if step.batch_size[0] != self.num_envs:
                raise ValueError(
                    f"step batch {step.batch_size[0]} != num_envs {self.num_envs} (pass env_ids)"
                )
            return self._all_rows
        rows = torch.as_tensor(env_ids, dtype=torch.int64).reshape(-1)
        if len(rows) != step.batch_size[0]:
            raise ValueError(f"{len(rows)} env_ids for a step of batch {step.batch_size[0]}")
        return rows

    def _ends_return(self, nxt: TensorDict, b: int) -> torch.Tensor:
        """The steps whose return stops there (bootstrap discount 0): terminated, and truncated unless truncation
        bootstraps."""
        terminated = self._flag(nxt, "terminated", b)
        return terminated if self.bootstrap_truncated else terminated | self._flag(nxt, "truncated", b)

    @staticmethod
    def _flag(nxt: TensorDict, key: str, b: int) -> torch.Tensor:
        value = nxt.get(key, None)
        if value is None:
            if key == "terminated":
                raise KeyError('a step needs ("next", "terminated")')
            return torch.zeros(b, dtype=torch.bool)
        return value.reshape(b).bool()

    def _allocate(self, step: TensorDict) -> None:
        if step.get(("next", "reward"), None) is None:
            raise KeyError('a step needs ("next", "reward")')
        size = self.n * self.num_envs
        self._ring = {
            k: torch.zeros((size, *v.shape[1:]), dtype=v.dtype)
            for k, v in field_leaves(step)
            if k[0] != "next"
        }
        self._last_next = {
            k: torch.zeros((self.num_envs, *v.shape[1:]), dtype=v.dtype)
            for k, v in field_leaves(step.get("next"))
        }
        reward = step.get(("next", "reward"))
        self._reward_shape = tuple(reward.shape[1:])
        self._reward_dtype = reward.dtype if reward.dtype.is_floating_point else torch.float32

    def _emit(
        self,
        rows: torch.Tensor,
        pos: torch.Tensor,
        count: torch.Tensor,
        ended: torch.Tensor,
        terminated: torch.Tensor,
        nxt: TensorDict | dict[Key, torch.Tensor],
    ) -> TensorDict | None:
        """Emit the transitions that end at ring slot ``pos`` of each env in ``rows``.

        Window index k = 0..n-1 runs oldest to newest (k = n-1 is the step at ``pos``); start k is valid when
        k >= n - count. A done env emits every valid start; any other env emits start 0 once it holds n steps.
        """
        n = self.n
        k = self._window  # [n, 1]
        slots = (pos[None, :] - (n - 1) + k) % n  # [n, B] ring slot of window position k
        valid = k >= (n - count)[None, :]
        emit = valid & (ended[None, :] | ((k == 0) & (count == n)[None, :]))
        if not bool(emit.any()):
            return None
        window = torch.where(valid, self._rewards[slots, rows[None, :]], torch.zeros((), dtype=torch.float64))
        returns = self._discount @ window  # [n, B]: return of every start up to the newest step
        ks, bs = emit.nonzero(as_tuple=True)  # row-major: ordered by start time, then env
        m = n - ks
        src = slots[ks, bs] * self.num_envs + rows[bs]
        fields: dict[Key, torch.Tensor] = {k: v.index_select(0, src) for k, v in self._ring.items()}
        next_leaves = field_leaves(nxt) if isinstance(nxt, TensorDictBase) else nxt.items()
        fields.update({("next", *k): v.index_select(0, bs) for k, v in next_leaves})
        shape = (len(ks), *self._reward_shape)
        fields[("next", "reward")] = returns[ks, bs].to(self._reward_dtype).reshape(shape)
        discount = self._gamma_pow[m] * (~terminated[bs]).to(torch.float64)
        fields[("bootstrap_discount",)] = discount.to(self._reward_dtype).reshape(shape)
        return _tensordict(fields, len(ks))


def _tensordict(fields: dict[Key, torch.Tensor], n: int) -> TensorDict:
    """A TensorDict [n] of fields made here (fresh tensors of n rows), in the order given, without re-validating
    each value (that costs more than building the transitions)."""
    tree: dict[str, Any] = {}
    for key, value in fields.items():
        node = tree
        for part in key[:-1]:
            node = node.setdefault(part, {})
        node[key[-1]] = value
    return new_tensordict(tree, n)
