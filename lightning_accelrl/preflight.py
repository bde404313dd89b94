"""Checks of ``accelrl fit``'s data settings before anything is built, each failing in one line.

- ``env_kwargs`` the env does not accept (one throw-away ``gymnasium.make``, only when ``env_kwargs`` are given);
- more envs than this machine can hold. The limit is a floor on what envs cost, so only requests that cannot
  fit are refused: an env in its own process (Gymnasium's async vector env, one worker per env) is an
  interpreter with numpy and Gymnasium loaded (>= 32 MiB resident) and holds about 4 of the learner's file
  descriptors (its pipe, its process sentinel); an env in the learner's process is at least a few KiB of
  Python objects (CartPole, the smallest: ~2.5 KB). Memory is what the kernel reports available, file
  descriptors the soft ``ulimit -n`` minus a reserve for the learner's own files.
"""

from __future__ import annotations

import os
import resource
from typing import Any

from lightning_accelrl.errors import ConfigError

PROCESS_ENV_BYTES = 32 << 20
PROCESS_ENV_FDS = 4
IN_PROCESS_ENV_BYTES = 4 << 10
RESERVED_FDS = 256


def check_data(data: Any, trainer: Any = None) -> None:
    """Check the ``data`` section of a fit config (a dict or jsonargparse Namespace); ``trainer`` for devices."""
    if data is None:
        return
    env, env_kwargs = data.get("env"), data.get("env_kwargs") or {}
    check_env_kwargs(env, env_kwargs)
    num_envs = data.get("num_envs")
    if not isinstance(num_envs, int) or num_envs < 1:
        return  # the data module reports it
    sampler = data.get("sampler") or "sync"
    procs = int(data.get("num_sampler_procs") or 1) if sampler in ("async", "ray") else 1
    ranks = _local_ranks(trainer)
    check_num_envs(num_envs * procs * ranks, in_processes(env, num_envs, data.get("vectorization") or "auto"))


def check_env_kwargs(env: Any, env_kwargs: dict[str, Any]) -> None:
    """``gymnasium.make(env, **env_kwargs)`` once; a keyword the env does not take is a one-line error."""
    if not isinstance(env, str) or not env_kwargs or env.startswith("ALE/"):
        return  # Atari env_kwargs are the preprocessing protocol, checked by the Atari env
    import gymnasium as gym

    try:
        made = gym.make(env, **env_kwargs)
    except TypeError as exc:
        reason = str(exc).split(" was raised from the environment creator")[0].strip()
        raise ConfigError(f"data.env_kwargs: {env} does not accept {sorted(env_kwargs)} ({reason})") from None
    except gym.error.Error:
        return  # unknown ids and the like: the data module reports them
    made.close()


def in_processes(env: Any, num_envs: int, vectorization: str) -> bool:
    """Whether each env gets its own process (Gymnasium's async vector env)."""
    if not isinstance(env, str) or env.startswith("ALE/") or vectorization == "sync":
        return False
    if vectorization == "async":
        return True
    import gymnasium as gym

    from lightning_accelrl.envs.gym import choose_vectorization

    try:
        return choose_vectorization(env, num_envs, "auto") == "async"
    except gym.error.Error:  # an unknown id: the data module reports it
        return False


def _local_ranks(trainer: Any) -> int:
    devices = trainer.get("devices") if trainer is not None else None
    if isinstance(devices, int) and devices > 0:
        return devices
    if isinstance(devices, (list, tuple)):
        return max(len(devices), 1)
    return 1


def check_num_envs(total: int, in_processes: bool) -> None:
    """Refuse ``total`` envs on this machine when their memory (or, in processes, file descriptors) cannot fit."""
    per_env = PROCESS_ENV_BYTES if in_processes else IN_PROCESS_ENV_BYTES
    available = available_memory()
    where = "env processes" if in_processes else "envs"
    if available is not None and total * per_env > available:
        raise ConfigError(
            f"data.num_envs: {total:,} {where} need at least {_gib(total * per_env)} of memory "
            f"({_size(per_env)} each), {_gib(available)} is available: use fewer envs"
        )
    if in_processes:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft != resource.RLIM_INFINITY and total * PROCESS_ENV_FDS > soft - RESERVED_FDS:
            most = max((soft - RESERVED_FDS) // PROCESS_ENV_FDS, 0)
            raise ConfigError(
                f"data.num_envs: {total:,} env processes need ~{total * PROCESS_ENV_FDS:,} open files, the "
                f"limit (ulimit -n) is {soft:,}: use at most {most:,}, vectorization sync, or raise the limit"
            )


def available_memory() -> int | None:
    """Bytes the kernel reports available (Linux MemAvailable; free pages elsewhere), or None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _gib(n: int) -> str:
    return f"{n / (1 << 30):,.1f} GiB"


def _size(n: int) -> str:
    return f"{n >> 20} MiB" if n >= 1 << 20 else f"{n >> 10} KiB"
