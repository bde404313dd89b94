"""Batched environments: Gymnasium vector envs, ale_py's C++ Atari vector env, TorchRL envs, behind one
same-step-autoreset interface.

An env is given in one of three forms (:func:`env_kind`):

- ``"id"``: a Gymnasium id (``"CartPole-v1"``, ``"ALE/Pong-v5"``, or ``"mypkg.envs:MyEnv-v0"``, which imports
  ``mypkg.envs`` first so that it registers the env);
- ``"factory"``: a callable (a function, a class, a ``functools.partial``...) that ``make_env`` calls as
  ``factory(**env_kwargs)`` and that returns a ``gymnasium.Env`` (called once per env: ``num_envs`` copies), an
  unbatched TorchRL env (``num_envs`` copies in a ``SerialEnv``, or a ``ParallelEnv`` with
  ``vectorization="async"``), or an already batched env (a Gymnasium vector env, a batched TorchRL env, a
  :class:`BatchedEnv`: used as it is, with its own number of envs). Each sampler process calls it for its own
  envs, so it must pickle for the Ray sampler (module-level functions and classes do);
- ``"object"``: an env instance (one ``gymnasium.Env``, a vector env, a TorchRL env, a :class:`BatchedEnv`),
  used in this process only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Literal

from lightning_accelrl.envs.base import BatchedEnv, EnvSpec, ObservationPart, Step, env_seeds
from lightning_accelrl.errors import ConfigError

__all__ = [
    "BatchedEnv",
    "EnvSpec",
    "ObservationPart",
    "Step",
    "env_kind",
    "env_name",
    "env_seeds",
    "make_env",
    "probe_spec",
]

EnvKind = Literal["id", "factory", "object"]


def _torchrl_env_class() -> type | None:
    """TorchRL's ``EnvBase`` if torchrl is loaded (a TorchRL env exists only then: no import needed to test)."""
    module = sys.modules.get("torchrl.envs")
    return None if module is None else module.EnvBase


def _is_env_object(env: Any) -> bool:
    import gymnasium as gym

    if isinstance(env, (BatchedEnv, gym.Env, gym.vector.VectorEnv)):
        return True
    torchrl_env = _torchrl_env_class()
    return torchrl_env is not None and isinstance(env, torchrl_env)


def env_kind(env: Any) -> EnvKind:
    """How ``env`` is given: an id string, a factory (any other callable), or an env object."""
    if isinstance(env, str):
        return "id"
    if _is_env_object(env):
        return "object"
    if callable(env):
        return "factory"
    raise ConfigError(
        f"env must be a Gymnasium id, an env factory (a callable returning an env) or an env, "
        f"got {type(env).__name__}"
    )


def env_name(env: Any) -> str:
    """How to name ``env`` in summaries: an id as it is, a factory as ``module:qualname`` (the form ``accelrl
    evaluate --env-factory`` takes), an env object by its type."""
    kind = env_kind(env)
    if kind == "id":
        return env
    if kind == "factory":
        module = getattr(env, "__module__", None)
        qualname = getattr(env, "__qualname__", None)
        if module and qualname:
            return f"{module}:{qualname}"
    return type(env).__name__


def make_env(
    env: Any,
    num_envs: int = 8,
    seed: int = 0,
    rank: int = 0,
    vectorization: str = "auto",
    env_kwargs: dict | None = None,
) -> BatchedEnv:
    """Turn an env id, an env factory or an env object (see the module docstring) into a batched env.

    ``ALE/...`` ids go to ale_py's C++ vector env (:class:`~lightning_accelrl.envs.atari.AtariEnv`) with
    ``vectorization="auto"`` or ``"ale"``, to Gymnasium's vector envs with the same preprocessing for
    ``"async"``/``"sync"``; ``env_kwargs`` then holds the Atari protocol (sticky actions, episodic life...).
    ``num_envs`` applies to ids and to factories of single envs; env i gets seed ``seed + rank * num_envs + i``.
    """
    kind = env_kind(env)
    if kind == "object":
        return wrap_env(env, seed, rank)
    if kind == "factory":
        return _from_factory(env, num_envs, seed, rank, vectorization, env_kwargs or {})
    if env.startswith("ALE/") or vectorization == "ale":
        from lightning_accelrl.envs.atari import make_atari_env

        return make_atari_env(env, num_envs, seed, rank, vectorization, env_kwargs)
    from lightning_accelrl.envs.gym import GymVectorEnv

    return GymVectorEnv(env, num_envs, seed, rank, vectorization, env_kwargs)  # type: ignore[arg-type]


def wrap_env(env: Any, seed: int = 0, rank: int = 0) -> BatchedEnv:
    """An env object as a :class:`BatchedEnv` (a single ``gymnasium.Env`` is a batch of one)."""
    import gymnasium as gym

    from lightning_accelrl.envs.gym import GymVectorEnv, vector_env

    if isinstance(env, BatchedEnv):
        return env
    if isinstance(env, gym.vector.VectorEnv):
        return GymVectorEnv(env, seed=seed, rank=rank)
    if isinstance(env, gym.Env):
        return GymVectorEnv(vector_env([lambda: env], "sync"), seed=seed, rank=rank)
    from lightning_accelrl.envs.torchrl_env import TorchRLEnv

    return TorchRLEnv(env, seed=seed, rank=rank)


def _from_factory(
    factory: Callable[..., Any], num_envs: int, seed: int, rank: int, vectorization: str, env_kwargs: dict
) -> BatchedEnv:
    import functools

    import gymnasium as gym

    from lightning_accelrl.envs.gym import GymVectorEnv, vector_env

    if num_envs < 1:
        raise ConfigError(f"num_envs must be >= 1, got {num_envs}")
    fn = functools.partial(factory, **env_kwargs) if env_kwargs else factory
    made = _call_factory(fn)
    if isinstance(made, gym.Env):  # one env per call: num_envs of them
        made.close()
        mode = "async" if vectorization == "async" else "sync"
        return GymVectorEnv(vector_env([fn] * num_envs, mode), seed=seed, rank=rank)
    torchrl_env = _torchrl_env_class()
    if (
        torchrl_env is not None
        and isinstance(made, torchrl_env)
        and len(made.batch_size) == 0
        and num_envs > 1
    ):
        from torchrl.envs import ParallelEnv, SerialEnv

        made.close()
        batched = (ParallelEnv if vectorization == "async" else SerialEnv)(num_envs, fn)
        return wrap_env(batched, seed, rank)
    return wrap_env(made, seed, rank)


def _call_factory(fn: Callable[..., Any]) -> Any:
    made = fn()
    if not _is_env_object(made):
        raise ConfigError(
            f"env factory {fn!r} returned {type(made).__name__}: it must return a gymnasium.Env, a Gymnasium "
            "vector env, a TorchRL env or a BatchedEnv"
        )
    return made


def probe_spec(env: Any, env_kwargs: dict | None = None, vectorization: str = "auto") -> EnvSpec:
    """Spec of an env in any form, without building a vector env (Atari ids: from the ROM and the protocol;
    factories: from one env they make, closed again)."""
    kind = env_kind(env)
    if kind == "id" and (env.startswith("ALE/") or vectorization == "ale"):
        from lightning_accelrl.envs.atari import atari_spec

        return atari_spec(env, env_kwargs)
    if kind == "id":
        from lightning_accelrl.envs.gym import probe_spec as gym_probe_spec

        return gym_probe_spec(env, env_kwargs)
    if kind == "object":
        return _object_spec(env)
    import functools

    made = _call_factory(functools.partial(env, **env_kwargs) if env_kwargs else env)
    try:
        return _object_spec(made)
    finally:
        made.close()


def _object_spec(env: Any) -> EnvSpec:
    import gymnasium as gym

    from lightning_accelrl.envs.spaces import spec_from_spaces

    if isinstance(env, BatchedEnv):
        return env.spec
    if isinstance(env, gym.vector.VectorEnv):
        return spec_from_spaces(env.single_observation_space, env.single_action_space)
    if isinstance(env, gym.Env):
        return spec_from_spaces(env.observation_space, env.action_space)
    from lightning_accelrl.envs.torchrl_env import spec_from_torchrl

    return spec_from_torchrl(env)
