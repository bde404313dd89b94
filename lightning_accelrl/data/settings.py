"""Checks of ``ExperienceDataModule``'s arguments: every bad value is one line that says how to fix it."""

from __future__ import annotations

import importlib.util
from typing import Any

from lightning_accelrl.data.needs import ExperienceNeeds
from lightning_accelrl.envs import env_kind
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError, check

_AT_LEAST_ONE = (
    "num_envs", "rollout_steps", "total_env_steps", "updates_per_epoch", "episode_window", "batch_size",
    "replay_capacity", "learning_starts", "num_sampler_procs", "weight_sync_every",
)  # fmt: skip


def check_arguments(args: dict[str, Any]) -> None:
    """The data module's arguments, checked before anything is built."""
    for name in _AT_LEAST_ONE:
        check(args[name] >= 1, f"{name} must be >= 1, got {args[name]}")
    check(args["replay_ratio"] > 0, f"replay_ratio must be > 0, got {args['replay_ratio']}")
    check(args["sampler_restarts"] >= 0, f"sampler_restarts must be >= 0, got {args['sampler_restarts']}")
    queue = args["async_queue_size"]
    check(queue is None or queue >= 1, f"async_queue_size must be >= 1, got {queue}")
    vectorization = args["vectorization"]
    check(
        vectorization in ("auto", "sync", "async"),
        f"vectorization must be auto, sync or async, got {vectorization!r}",
    )
    sampler, env = args["sampler"], args["env"]
    if sampler == "ray":
        check(
            importlib.util.find_spec("ray") is not None,
            "sampler='ray' needs Ray: pip install 'lightning-accelrl[ray]'",
        )
    if sampler in ("async", "ray"):
        check(
            env_kind(env) != "object",
            f"sampler={sampler!r} builds envs in every sampler process: pass an env id or an env factory "
            f"(a picklable callable returning an env), not a {type(env).__name__} object",
        )


def check_needs(needs: ExperienceNeeds, spec: EnvSpec, algorithm: str) -> None:
    """The env can give what the algorithm needs (one line naming both otherwise)."""
    if needs.actions == "discrete" and not spec.discrete:
        raise ConfigError(
            f"{algorithm} needs a discrete action space, but the env's actions are continuous "
            f"(a Box of {spec.action_dim} dimension{'s' if spec.action_dim != 1 else ''}): use SAC, TD3, DDPG, PPO "
            "or A2C for continuous actions"
        )
    if needs.actions == "discrete" and spec.action_nvec:
        raise ConfigError(
            f"{algorithm} needs one discrete action, but the env's actions are MultiDiscrete "
            f"{list(spec.action_nvec)}: use PPO, A2C or APPO"
        )
    if needs.actions == "continuous" and spec.discrete:
        kind = (
            f"MultiDiscrete {list(spec.action_nvec)}" if spec.action_nvec else f"Discrete({spec.num_actions})"
        )
        raise ConfigError(
            f"{algorithm} needs a continuous (Box) action space, but the env's actions are {kind}: use DQN, "
            "PPO or A2C for discrete actions"
        )
    if needs.kind not in ("rollout", "replay"):
        raise ConfigError(
            f"{algorithm} asks for {needs.kind!r} experience; sources provide rollout or replay"
        )
    if needs.updates_per_batch < 1 or (needs.kind == "rollout" and needs.updates_per_batch != 1):
        raise ConfigError(
            f"{algorithm} asks for {needs.updates_per_batch} updates per batch: use 1 or more, with replay only "
            "(a rollout is one training batch; the algorithm sets its own epochs and minibatches)"
        )
