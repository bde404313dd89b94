"""Samplers: batched inference over vector envs into preallocated rollout buffers."""

from lightning_accelrl.sampling.agent import Agent
from lightning_accelrl.sampling.episodes import EpisodeTracker
from lightning_accelrl.sampling.sync import SyncSampler

__all__ = ["Agent", "EpisodeTracker", "SyncSampler"]
