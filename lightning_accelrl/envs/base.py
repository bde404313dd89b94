"""The batched-env interface the samplers talk to.

Every back-end (Gymnasium vector envs, ale_py's C++ vector env, any TorchRL ``EnvBase``) is adapted to
*same-step* autoreset: ``step`` returns the true next observation (the final one where an episode ended)
and, separately, the observation to act on next (the reset one where an episode ended). With that contract
no transition across an episode boundary can be built by the layers above.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch


@dataclass(frozen=True)
class EnvSpec:
    """What a network needs to know about an env: observation shape/dtype and the action space."""

    observation_shape: tuple[int, ...]
    observation_dtype: torch.dtype
    discrete: bool
    num_actions: int = 0  # discrete action count
    action_dim: int = 0  # continuous action dimension
    action_low: tuple[float, ...] = ()
    action_high: tuple[float, ...] = ()

    def to_dict(self) -> dict:
        """Plain types only, so the spec can live in a checkpoint's hyper-parameters."""
        d = dict(self.__dict__)
        d["observation_shape"] = list(self.observation_shape)
        d["observation_dtype"] = str(self.observation_dtype).removeprefix("torch.")
        d["action_low"], d["action_high"] = list(self.action_low), list(self.action_high)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> EnvSpec:
        d = dict(d)
        d["observation_shape"] = tuple(d["observation_shape"])
        d["observation_dtype"] = getattr(torch, d["observation_dtype"])
        d["action_low"], d["action_high"] = tuple(d["action_low"]), tuple(d["action_high"])
        return cls(**d)

    @property
    def action_shape(self) -> tuple[int, ...]:
        return () if self.discrete else (self.action_dim,)

    @property
    def action_dtype(self) -> torch.dtype:
        return torch.int64 if self.discrete else torch.float32


class Step(NamedTuple):
    """Result of one vectorised step; every tensor has leading dimension ``num_envs`` and lives on the CPU."""

    next_observation: torch.Tensor  # true s_{t+1}; the final observation where done
    reward: torch.Tensor  # float32 [B]
    terminated: torch.Tensor  # bool [B]
    truncated: torch.Tensor  # bool [B]
    observation: torch.Tensor  # what to act on next: the reset observation where done


class StepArrays(NamedTuple):
    """A :class:`Step` with reward and flags as numpy arrays, as back-ends produce them and samplers stage them.

    Observations stay tensors (the policy's input, possibly in pinned memory); the flags skip a tensor round trip
    (~1.5 us per conversion and way, ~10 us per step in all: 2% of a 64-env CartPole step).
    """

    next_observation: torch.Tensor
    reward: np.ndarray  # float32 [B]
    terminated: np.ndarray  # bool [B]
    truncated: np.ndarray  # bool [B]
    observation: torch.Tensor
    #: the game's own reward [B] where ``reward`` is transformed (Atari's clipping); summed into episode scores
    score_reward: np.ndarray | None = None

    def to_step(self) -> Step:
        return Step(
            self.next_observation,
            torch.from_numpy(self.reward),
            torch.from_numpy(self.terminated),
            torch.from_numpy(self.truncated),
            self.observation,
        )


class BatchedEnv(ABC):
    """``num_envs`` environments stepped together with one batched action."""

    num_envs: int
    spec: EnvSpec

    @abstractmethod
    def reset(self) -> torch.Tensor:
        """Reset every env (seeded at construction) and return the observations [B, ...]."""

    @abstractmethod
    def step(self, actions: torch.Tensor) -> Step:
        """Step every env with ``actions`` [B, ...] (any device)."""

    def step_async(self, actions: torch.Tensor) -> None:
        """Begin a step; back-ends with worker threads or processes step while the caller works.

        The default defers the whole step to :meth:`step_wait`. The observations of the previous step stay
        valid until ``step_wait`` returns (samplers copy them meanwhile).
        """
        self._pending_actions = actions

    def step_wait(self) -> Step:
        """Finish the step begun by :meth:`step_async`."""
        actions, self._pending_actions = self._pending_actions, None
        return self.step(actions)

    def step_wait_arrays(self) -> StepArrays:
        """:meth:`step_wait` with numpy reward and flags (back-ends that have them as numpy skip the tensors)."""
        s = self.step_wait()
        return StepArrays(
            s.next_observation,
            as_numpy(s.reward),
            as_numpy(s.terminated),
            as_numpy(s.truncated),
            s.observation,
        )

    def close(self) -> None:  # noqa: B027 - optional for back-ends without resources
        """Release processes or threads held by the back-end."""

    def render(self) -> list:
        """RGB frames of each env, where the back-end supports it."""
        raise NotImplementedError(f"{type(self).__name__} cannot render")

    def __enter__(self) -> BatchedEnv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """A CPU tensor's numpy view (no copy); other tensors are copied to the CPU first (never numpy on CUDA)."""
    if x.is_cpu and not x.requires_grad:
        return x.numpy()
    return x.detach().cpu().numpy()


def env_seeds(seed: int, rank: int, num_envs: int) -> list[int]:
    """Distinct seeds per (seed, global rank, env index): seed + rank * num_envs + i."""
    return [seed + rank * num_envs + i for i in range(num_envs)]
