"""Callbacks: run summary, evaluation with videos, RNG states in checkpoints (and, later, rate-limiter statistics)."""

from lightning_accelrl.callbacks.evaluation import VideoEvaluation
from lightning_accelrl.callbacks.rng import RNGState
from lightning_accelrl.callbacks.summary import RunSummary

__all__ = ["RNGState", "RunSummary", "VideoEvaluation"]
