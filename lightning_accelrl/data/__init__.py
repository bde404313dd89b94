"""Data modules that stream experience (rollouts or replay samples) to the Trainer."""

from lightning_accelrl.data.async_runner import SamplerProcessError
from lightning_accelrl.data.datamodule import ExperienceDataModule

__all__ = ["ExperienceDataModule", "SamplerProcessError"]
