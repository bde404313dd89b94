"""Algorithms as LightningModules, one file each."""

from lightning_accelrl.algos.a2c import A2C
from lightning_accelrl.algos.appo import APPO
from lightning_accelrl.algos.async_a2c import AsyncA2C
from lightning_accelrl.algos.base import RLModule
from lightning_accelrl.algos.c51 import CategoricalDQN
from lightning_accelrl.algos.dqn import DQN
from lightning_accelrl.algos.ppo import PPO
from lightning_accelrl.algos.sac import SAC
from lightning_accelrl.algos.td3 import DDPG, TD3

__all__ = ["A2C", "APPO", "AsyncA2C", "DDPG", "DQN", "PPO", "SAC", "TD3", "CategoricalDQN", "RLModule"]
