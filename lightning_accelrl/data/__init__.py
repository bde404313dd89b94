"""Data modules that stream experience (rollouts or replay samples) to the Trainer."""

from lightning_accelrl.data.datamodule import ExperienceDataModule

__all__ = ["ExperienceDataModule"]
