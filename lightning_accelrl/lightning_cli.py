"""``accelrl fit`` on LightningCLI: the algorithm is chosen in YAML (``model.class_path``), the data module is
:class:`ExperienceDataModule`, and a :class:`RunSummary` callback writes ``summary.json``."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import torch
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar, RichProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO

from lightning_accelrl.algos.base import RLModule
from lightning_accelrl.callbacks.rng import RNGState
from lightning_accelrl.callbacks.summary import RunSummary
from lightning_accelrl.checkpoint_io import AtomicCheckpointIO
from lightning_accelrl.checkpoints import algorithm_of, read_checkpoint
from lightning_accelrl.data.datamodule import ExperienceDataModule
from lightning_accelrl.errors import ConfigError


class AccelRLCLI(LightningCLI):
    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_argument(
            "--torch_threads",
            type=int,
            default=1,
            help="torch intra-op threads (1 suits small networks and leaves the cores to the envs; 0 = torch's default)",
        )

    def before_instantiate_classes(self) -> None:
        threads = self.config[self.subcommand].get("torch_threads", 1)
        if threads and threads > 0:
            torch.set_num_threads(threads)

    def _parse_ckpt_path(self) -> None:
        """Refuse a checkpoint of another algorithm before Lightning copies its hyper-parameters into the config."""
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if ckpt_path and ckpt_path not in ("last", "best", "hpc", "registry"):
            algorithm = algorithm_of(read_checkpoint(ckpt_path), ckpt_path)
            class_path = str(self.config[sub]["model"]["class_path"])
            module_name, _, name = class_path.rpartition(".")
            cls = getattr(importlib.import_module(module_name), name)
            if algorithm != f"{cls.__module__}.{cls.__qualname__}":
                raise ConfigError(
                    f"checkpoint {ckpt_path!r} was written by {algorithm.rsplit('.', 1)[-1]}, "
                    f"but the config trains {cls.__name__}: use the same algorithm to resume"
                )
        super()._parse_ckpt_path()

    def before_fit(self) -> None:
        _share_log_version(self.trainer.loggers)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        """Rich progress bar (env steps/s, recent return) and a ``last.ckpt`` checkpoint, unless configured otherwise."""
        configured = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks = [*callbacks, RichProgressBar(leave=True)]
        if config.get("enable_checkpointing", True) is not False and not any(
            isinstance(c, ModelCheckpoint) for c in configured
        ):
            callbacks = [*callbacks, ModelCheckpoint(save_last=True)]  # checkpoints/last.ckpt to resume from
        callbacks, config = _resume_defaults(config, configured, callbacks)
        return super()._instantiate_trainer(config, callbacks)

    def after_fit(self) -> None:
        summary = next((cb for cb in self.trainer.callbacks if isinstance(cb, RunSummary)), None)
        if self.trainer.is_global_zero and summary is not None and summary.path is not None:
            print(f"summary: {summary.path}", flush=True)


def _resume_defaults(
    config: dict[str, Any], configured: list[Any], callbacks: list[Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Full resume by default: RNG states in checkpoints (RNGState) and atomic checkpoint files (AtomicCheckpointIO)."""
    if not any(isinstance(c, RNGState) for c in configured):
        callbacks = [*callbacks, RNGState()]
    plugins = config.get("plugins")
    plugins = [] if plugins is None else list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
    if not any(isinstance(p, CheckpointIO) for p in plugins):
        config = {**config, "plugins": [*plugins, AtomicCheckpointIO()]}
    return callbacks, config


def _share_log_version(loggers: list[Any]) -> None:
    """CSV and TensorBoard loggers of one run write into one ``version_N`` folder (each would count its own)."""
    if len(loggers) < 2:
        return
    first = loggers[0]
    for logger in loggers[1:]:
        same_place = (logger.save_dir, logger.name) == (first.save_dir, first.name)
        if same_place and getattr(logger, "_version", "set") is None:
            logger._version = first.version


def run_fit(args: list[str]) -> None:
    sys.argv = [sys.argv[0], "fit", *args]  # DDP re-launches sys.argv: keep the expanded recipe there
    AccelRLCLI(
        RLModule,
        ExperienceDataModule,
        subclass_mode_model=True,
        args=None,  # read from sys.argv, set above
        trainer_defaults={"max_epochs": -1},
        parser_kwargs={"exit_on_error": False, "allow_abbrev": False},
        save_config_kwargs={"overwrite": True},
        auto_configure_optimizers=False,
    )
