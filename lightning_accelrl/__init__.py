"""lightning_accelrl: accelerated deep RL and Reverb-style replay tables for PyTorch Lightning.

Heavy modules (torch, lightning, torchrl) load lazily so that ``accelrl --help`` stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "PPO": "lightning_accelrl.algos.ppo",
    "A2C": "lightning_accelrl.algos.a2c",
    "APPO": "lightning_accelrl.algos.appo",
    "AsyncA2C": "lightning_accelrl.algos.async_a2c",
    "DQN": "lightning_accelrl.algos.dqn",
    "CategoricalDQN": "lightning_accelrl.algos.c51",
    "SAC": "lightning_accelrl.algos.sac",
    "TD3": "lightning_accelrl.algos.td3",
    "DDPG": "lightning_accelrl.algos.td3",
    "ExperienceDataModule": "lightning_accelrl.data.datamodule",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lightning_accelrl' has no attribute {name!r}")
