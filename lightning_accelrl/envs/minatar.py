"""MinAtar (Young & Tian, 2019): Asterix, Breakout, Freeway, Seaquest and SpaceInvaders as 10x10xC boolean
grids (channels last), as Gymnasium ids ``MinAtar/<Game>-v1`` (minimal action set) and ``-v0`` (6 actions).

The ``minatar`` package declares its ids through an entry point that Gymnasium 1.x no longer loads, so the
library registers them when an id starting with ``MinAtar/`` is first resolved, in every process that resolves
one (sampler processes and Ray actors included). The package's defaults are kept: sticky actions with
probability 0.1, difficulty ramping, no time limit.
"""

from __future__ import annotations

import gymnasium as gym

from lightning_accelrl.errors import ConfigError

PREFIX = "MinAtar/"
INSTALL_HINT = "pip install 'lightning-accelrl[minatar]'"
_REGISTERED_MARK = "MinAtar/Breakout-v1"  # one of the ids the package registers


def register_minatar_envs(env_id: str) -> None:
    """Register the ``MinAtar/*`` ids once per process; a one-line :class:`ConfigError` without the package."""
    if _REGISTERED_MARK in gym.registry:
        return
    try:
        from minatar import gym as minatar_gym
    except ImportError:
        raise ConfigError(f"env {env_id!r} needs the MinAtar package: {INSTALL_HINT}") from None
    minatar_gym.register_envs()
