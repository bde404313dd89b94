"""EnvStepProgressBar: an RL run's progress in env steps of its budget, not in epochs.

``64,256/100,000 env steps · 6.3k steps/s · return 472``: the count and budget are the ones the experience
source pushes to the algorithm (:attr:`RLModule.env_steps`, :attr:`RLModule.total_env_steps`), the speed and
return are the logged ``env_steps_per_s`` and ``episode_return_mean`` (``trainer.progress_bar_metrics``).
``accelrl fit`` installs it by default; for a module that is not an :class:`RLModule` it is Lightning's
per-epoch bar.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm

from lightning_accelrl.algos.base import RLModule

BAR_FORMAT = "{percentage:3.0f}%|{bar:20}| {desc} [{elapsed}]"


def si(value: float) -> str:
    """``6300 -> 6.3k``, ``1.25e6 -> 1.2M``, ``950 -> 950``."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= factor:
            return f"{value / factor:.1f}{suffix}"
    return f"{value:.0f}"


def describe(env_steps: int, total: int, metrics: dict[str, Any]) -> str:
    """The bar's text: env steps of the budget (when known), then speed and recent return when logged."""
    parts = [f"{env_steps:,}/{total:,} env steps" if total > 0 else f"{env_steps:,} env steps"]
    speed = _finite(metrics.get("env_steps_per_s"))
    if speed is not None:
        parts.append(f"{si(speed)} steps/s")
    ret = _finite(metrics.get("episode_return_mean"))
    if ret is not None:
        parts.append(f"return {ret:.0f}" if abs(ret) >= 100 else f"return {ret:.3g}")
    return " · ".join(parts)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class EnvStepProgressBar(TQDMProgressBar):
    """One bar for the whole run, counting env steps of the budget (redrawn at most every ``min_interval_s``)."""

    def __init__(self, refresh_rate: int = 1, process_position: int = 0, min_interval_s: float = 0.2) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=False)
        self.min_interval_s = min_interval_s
        self._drawn_at = -math.inf

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(pl_module, RLModule):
            super().on_train_start(trainer, pl_module)
            return
        self.train_progress_bar = Tqdm(
            desc="",
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            smoothing=0,
            bar_format=BAR_FORMAT,
        )

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(pl_module, RLModule):
            super().on_train_epoch_start(trainer, pl_module)
            return
        self._draw(trainer, pl_module, force=True)

    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if not isinstance(pl_module, RLModule):
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
            return
        if (batch_idx + 1) % max(self.refresh_rate, 1) == 0:
            self._draw(trainer, pl_module)

    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not isinstance(pl_module, RLModule):
            super().on_train_epoch_end(trainer, pl_module)
            return
        self._draw(trainer, pl_module, force=True)

    def _draw(self, trainer: Trainer, module: RLModule, force: bool = False) -> None:
        bar = self.train_progress_bar
        now = time.monotonic()
        if bar.disable or (not force and now - self._drawn_at < self.min_interval_s):
            return
        self._drawn_at = now
        total, steps = int(module.total_env_steps), int(module.env_steps)
        bar.total = total if total > 0 else None  # not pushed yet: a count without a bar
        bar.n = min(steps, total) if total > 0 else steps
        bar.set_description_str(describe(steps, total, trainer.progress_bar_metrics), refresh=False)
        bar.refresh()
