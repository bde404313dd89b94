"""StopAtTarget: a Lightning callback that ends fit once the logged training return reaches a target."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer


class StopAtTarget(Callback):
    """Stops fit when ``episode_return_mean`` >= ``target`` over a window of at least ``min_episodes`` episodes.

    Reads only the metrics logged every step (``episode_return_mean``, ``episode_window_count``): with the
    default window of 100 it is ``RunSummary``'s rule, so the run ends where ``env_steps_to_threshold`` is taken.
    """

    def __init__(self, target: float, min_episodes: int = 100) -> None:
        self.target = target
        self.min_episodes = min_episodes

    def on_train_batch_end(self, trainer: Trainer, pl_module: LightningModule, *args: Any) -> None:
        metrics = trainer.callback_metrics
        value, episodes = metrics.get("episode_return_mean"), metrics.get("episode_window_count")
        if value is None or episodes is None or float(episodes) < self.min_episodes:
            return
        if float(value) >= self.target:
            trainer.should_stop = True
