"""Callbacks: run summary (and, as the project grows, evaluation, video and rate-limiter statistics)."""

from lightning_accelrl.callbacks.summary import RunSummary

__all__ = ["RunSummary"]
