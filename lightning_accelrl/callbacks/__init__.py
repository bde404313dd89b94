"""Callbacks: run summary, evaluation with videos, RNG states in checkpoints, the env-step progress bar."""

from lightning_accelrl.callbacks.evaluation import VideoEvaluation
from lightning_accelrl.callbacks.progress import EnvStepProgressBar
from lightning_accelrl.callbacks.rng import RNGState
from lightning_accelrl.callbacks.summary import RunSummary

__all__ = ["EnvStepProgressBar", "RNGState", "RunSummary", "VideoEvaluation"]
