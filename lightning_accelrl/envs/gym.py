"""Gymnasium vector envs behind the :class:`BatchedEnv` interface.

We build vector envs in *same-step* autoreset mode (Gymnasium 1.x defaults to next-step, where the step after
a done returns the reset observation with reward 0: code written for the other mode learns from transitions
that cross episode boundaries). User-built vector envs in next-step mode are refused with a clear error.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from lightning_accelrl.envs.base import BatchedEnv, EnvSpec, Step, StepArrays, as_numpy, env_seeds
from lightning_accelrl.envs.minatar import PREFIX as MINATAR_PREFIX
from lightning_accelrl.envs.minatar import register_minatar_envs
from lightning_accelrl.envs.spaces import ObservationEncoder, action_offset, spec_from_spaces
from lightning_accelrl.errors import ConfigError

Vectorization = Literal["auto", "sync", "async"]
_CHEAP_ENTRY_POINTS = ("gymnasium.envs.classic_control", "gymnasium.envs.toy_text", "minatar.")


def check_env_id(env_id: str, allow_import: bool = True) -> None:
    """Raise a one-line :class:`ConfigError` for an id Gymnasium does not know, with close matches.

    ``"module:EnvId"`` (Gymnasium's form for envs registered by a module on import) imports ``module`` first;
    with ``allow_import=False`` (ids read from files) the module must already be imported.
    """
    module, sep, name = env_id.rpartition(":")
    if sep:
        import_env_module(module, env_id, allow_import)
    _register_optional_envs(name)
    if name in gym.registry:
        return
    close = difflib.get_close_matches(name, list(gym.registry), n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    extra = (
        " Atari ids need the atari extra: pip install 'lightning-accelrl[atari]'." if "ALE/" in name else ""
    )
    where = f" (module {module!r} registers no such env)" if sep else ""
    raise ConfigError(f"unknown env id {env_id!r}{where}.{hint}{extra}")


def import_env_module(module: str, env_id: str, allow_import: bool = True) -> None:
    """Import the module a ``module:EnvId`` id names (it registers the env); one-line error when it cannot."""
    import importlib
    import sys

    if module in sys.modules:
        return
    if not allow_import:
        raise ConfigError(f"env {env_id!r}: import its module first (--import {module})")
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"env {env_id!r}: cannot import module {module!r} ({exc})") from None


def _register_optional_envs(env_id: str) -> None:
    if env_id.startswith(MINATAR_PREFIX):
        register_minatar_envs(env_id)
    if env_id.startswith("ALE/") and env_id not in gym.registry:
        try:
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            pass


def probe_spec(env_id: str, env_kwargs: dict[str, Any] | None = None) -> EnvSpec:
    """Spec of ``env_id`` from one throw-away env (cheap next to building the vector env)."""
    check_env_id(env_id)
    try:
        env = gym.make(env_id, **(env_kwargs or {}))
    except TypeError as err:  # an argument the env's constructor does not take
        if not env_kwargs:
            raise
        raise ConfigError(
            f"env_kwargs {sorted(env_kwargs)} are not accepted by {env_id} ({str(err).strip().splitlines()[0]})"
        ) from None
    try:
        return spec_from_env(env)
    finally:
        env.close()


def spec_from_env(env: gym.Env) -> EnvSpec:
    """Spec of one Gymnasium env, from its spaces."""
    return spec_from_spaces(env.observation_space, env.action_space)


def choose_vectorization(env_id: str, num_envs: int, mode: Vectorization) -> Literal["sync", "async"]:
    """``auto``: in-process for cheap envs (classic control, MinAtar: IPC costs more than a step), else processes."""
    if mode != "auto":
        return mode
    entry = str(gym.spec(env_id.rpartition(":")[2]).entry_point)
    if num_envs == 1 or entry.startswith(_CHEAP_ENTRY_POINTS):
        return "sync"
    return "async"


def _make_vec(
    env_id: str, num_envs: int, vectorization: Vectorization, env_kwargs: dict[str, Any] | None
) -> gym.vector.VectorEnv:
    check_env_id(env_id)
    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
    mode = choose_vectorization(env_id, num_envs, vectorization)
    vector_kwargs: dict[str, Any] = {"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP}
    if mode == "sync":
        vector_kwargs["copy"] = False  # the sampler copies into its own buffers at once
    else:
        # forkserver: torchrl switches the global start method to spawn (24 s start-ups)
        vector_kwargs["context"] = "forkserver"
    return gym.make_vec(
        env_id, num_envs=num_envs, vectorization_mode=mode, vector_kwargs=vector_kwargs, **(env_kwargs or {})
    )


def vector_env(fns: Sequence[Any], mode: Literal["sync", "async"]) -> gym.vector.VectorEnv:
    """A same-step-autoreset vector env over env functions, in-process (``sync``) or one process each."""
    same_step = gym.vector.AutoresetMode.SAME_STEP
    if mode == "sync":
        return gym.vector.SyncVectorEnv(fns, autoreset_mode=same_step)
    # forkserver: torchrl switches the global start method to spawn (24 s start-ups)
    return gym.vector.AsyncVectorEnv(fns, autoreset_mode=same_step, context="forkserver")


class GymVectorEnv(BatchedEnv):
    """A Gymnasium vector env (built from an id, or given) in same-step autoreset mode.

    ``seeds`` (explicit per-env seeds) overrides ``seed``/``rank``. ``frame_stack``: the observation is a stack
    of this many frames along its first axis (recorded in the spec for replay's frame deduplication).
    """

    def __init__(
        self,
        env: str | gym.vector.VectorEnv,
        num_envs: int = 8,
        seed: int = 0,
        rank: int = 0,
        vectorization: Vectorization = "auto",
        env_kwargs: dict[str, Any] | None = None,
        seeds: Sequence[int] | None = None,
        frame_stack: int = 0,
    ) -> None:
        if isinstance(env, str):
            self.env = _make_vec(env, num_envs, vectorization, env_kwargs)
        else:
            self.env = env
            mode_found = env.metadata.get("autoreset_mode", gym.vector.AutoresetMode.NEXT_STEP)
            if mode_found != gym.vector.AutoresetMode.SAME_STEP:
                raise ConfigError(
                    f"vector env uses autoreset mode {mode_found}; build it with "
                    "vector_kwargs={'autoreset_mode': gymnasium.vector.AutoresetMode.SAME_STEP}"
                )
        self.num_envs = self.env.num_envs
        self._frame_stack = frame_stack
        self._encoder = ObservationEncoder(self.env.single_observation_space)
        self.spec = spec_from_spaces(
            self.env.single_observation_space, self.env.single_action_space, frame_stack
        )
        self._seeds = list(seeds) if seeds is not None else env_seeds(seed, rank, self.num_envs)
        if len(self._seeds) != self.num_envs:
            raise ConfigError(f"got {len(self._seeds)} seeds for {self.num_envs} envs")
        self.env.action_space.seed(self._seeds[0])
        self._action_offset = action_offset(self.env.single_action_space)
        self._has_offset = bool(np.any(self._action_offset))
        if not self.spec.discrete:
            self._low = np.asarray(self.spec.action_low, dtype=np.float32)
            self._high = np.asarray(self.spec.action_high, dtype=np.float32)
        # subprocesses step while the sampler works, unless they write the observations we still read
        venv = self.env
        self._can_async = isinstance(venv, gym.vector.AsyncVectorEnv) and (
            venv.copy or not venv.shared_memory
        )

    def split(self, num_groups: int) -> list[GymVectorEnv]:
        """``num_groups`` vector envs over this one's env functions and seeds (this one is closed)."""
        venv = self.env
        if not isinstance(venv, (gym.vector.SyncVectorEnv, gym.vector.AsyncVectorEnv)):
            raise ConfigError(
                f"cannot split a {type(venv).__name__} into env groups: pass an env id or a factory"
            )
        fns, mode = venv.env_fns, "async" if isinstance(venv, gym.vector.AsyncVectorEnv) else "sync"
        venv.close()
        size = self.num_envs // num_groups
        return [
            GymVectorEnv(
                vector_env(fns[g * size : (g + 1) * size], mode),
                seeds=self._seeds[g * size : (g + 1) * size],
                frame_stack=self._frame_stack,
            )
            for g in range(num_groups)
        ]

    def reset(self) -> torch.Tensor:
        obs, _ = self.env.reset(seed=self._seeds)
        return self._encoder.batch(obs)

    def _actions(self, actions: torch.Tensor) -> np.ndarray:
        a = as_numpy(actions)
        if not self.spec.discrete:
            return np.clip(a, self._low, self._high)
        return a + self._action_offset if self._has_offset else a

    def _step_arrays(self, obs: Any, reward: Any, terminated: Any, truncated: Any, info: dict) -> StepArrays:
        """Same-step autoreset results: final observations swapped in where episodes ended."""
        encoder = self._encoder
        observation = encoder.batch(obs)
        next_observation = observation
        final_mask = info.get("_final_obs")  # present only on steps where some env finished
        if final_mask is not None:
            rows, final_obs = final_mask.nonzero()[0].tolist(), info["final_obs"]
            if encoder.passthrough:
                final = obs.copy()
                for i in rows:  # few rows per step: faster than np.stack
                    final[i] = final_obs[i]
                next_observation = encoder.batch(final)
            else:
                next_observation = observation.clone()
                for i in rows:
                    next_observation[i] = encoder.one(final_obs[i])
        return StepArrays(
            next_observation,
            np.asarray(reward, dtype=np.float32),
            np.asarray(terminated),
            np.asarray(truncated),
            observation,
        )

    def step(self, actions: torch.Tensor) -> Step:
        return self._step_arrays(*self.env.step(self._actions(actions))).to_step()

    def step_async(self, actions: torch.Tensor) -> None:
        if self._can_async:
            self.env.step_async(self._actions(actions))
        else:
            super().step_async(actions)

    def step_wait(self) -> Step:
        return self.step_wait_arrays().to_step()

    def step_wait_arrays(self) -> StepArrays:
        if self._can_async:
            return self._step_arrays(*self.env.step_wait())
        actions, self._pending_actions = self._pending_actions, None
        return self._step_arrays(*self.env.step(self._actions(actions)))

    def render(self) -> list:
        return list(self.env.render())

    def close(self) -> None:
        self.env.close()
