"""``accelrl fit`` on LightningCLI: the algorithm is chosen in YAML (``model.class_path``), the data module is
:class:`ExperienceDataModule`, and a :class:`RunSummary` callback writes ``summary.json``.

Defaults it adds: an env-step progress bar, ``last.ckpt`` checkpoints, RNG states in checkpoints, atomic
checkpoint files that load as data only; loggers named after the recipe and what was overridden
(:mod:`lightning_accelrl.run_name`).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint, ProgressBar
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins.io import CheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from lightning_accelrl import preflight, run_name
from lightning_accelrl.algos.base import RLModule
from lightning_accelrl.callbacks.progress import EnvStepProgressBar
from lightning_accelrl.callbacks.rng import RNGState
from lightning_accelrl.callbacks.summary import RunSummary
from lightning_accelrl.checkpoint_io import AtomicCheckpointIO
from lightning_accelrl.checkpoints import (
    accepted_hparams,
    algorithm_class,
    compatibility_warnings,
    read_checkpoint,
)
from lightning_accelrl.data.datamodule import ExperienceDataModule
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.factory import import_network_module
from lightning_accelrl.trusted import resolve_class

_SYMBOLIC_CKPT = ("last", "best", "hpc", "registry")


class AccelRLCLI(LightningCLI):
    #: the run's config identity (:func:`lightning_accelrl.run_name.config_id`), written to ``summary.json``
    config_id: str | None = None

    def add_arguments_to_parser(self, parser: Any) -> None:
        parser.add_lightning_class_args(RunSummary, "summary")
        parser.add_argument(
            "--torch_threads",
            type=int,
            default=1,
            help="torch intra-op threads (1 suits small networks and leaves the cores to the envs; 0 = torch's default)",
        )

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        threads = config.get("torch_threads", 1)
        if threads and threads > 0:
            torch.set_num_threads(threads)
        preflight.check_data(config.get("data"), config.get("trainer"))
        model = config.get("model") or {}
        for key in ("network", "actor_network", "critic_network"):  # the user's own config: trusted
            import_network_module((model.get("init_args") or {}).get(key))
        self._name_run()
        self._resolve_last_checkpoint()

    def _dump(self, config: Any) -> dict[str, Any]:
        """The config as ``config.yaml`` will hold it (plain dicts and lists)."""
        return yaml.safe_load(self._parser(self.subcommand).dump(config, skip_none=False)) or {}

    def _name_run(self) -> None:
        """Loggers named after the config files' name and what the command line changed; the config identity."""
        config = self.config[self.subcommand]
        full = self._dump(config)
        self.config_id = run_name.config_id(full)
        loggers = config.get("trainer", {}).get("logger")
        entries = loggers if isinstance(loggers, list) else [loggers]
        named = [e for e in entries if _logger_name(e) is not None]
        if not named or _given_on_command_line("--trainer.logger"):
            return
        base_args = _config_args(sys.argv[2:])
        try:
            base = self._dump(self._parser(self.subcommand).parse_args(base_args))
        except (Exception, SystemExit):
            base = {}  # the config files alone are incomplete: every value is the command line's
        changed = run_name.overrides(base, full)
        for entry in named:
            entry.init_args.name = run_name.run_name(_logger_name(entry), changed)

    def _resolve_last_checkpoint(self) -> None:
        """``--ckpt_path last``: the newest ``last.ckpt`` among this run's ``version_*`` folders, adopted as an
        explicit path. Lightning's own ``last`` looks only in the new run's ``version_N`` (empty), so the run would
        start afresh; here it resumes, or stops in one line when there is nothing to resume. A ``ModelCheckpoint``
        with a fixed ``dirpath`` keeps Lightning's meaning (it finds its ``last.ckpt`` there)."""
        config = self.config[self.subcommand]
        if config.get("ckpt_path") != "last" or _fixed_checkpoint_dir(config.get("trainer") or {}):
            return
        run_dir = _run_folder(config.get("trainer") or {})
        if run_dir is None:
            raise ConfigError(
                "--ckpt_path last looks for the run's last.ckpt under trainer.logger's save_dir/name, but no logger "
                "of the config names both: give the checkpoint's path (--ckpt_path .../checkpoints/last.ckpt)"
            )
        found = sorted(run_dir.glob("version_*/checkpoints/last.ckpt"), key=lambda p: p.stat().st_mtime)
        if not found:
            raise ConfigError(
                f"--ckpt_path last: no {run_dir}/version_*/checkpoints/last.ckpt to resume from (a run's folder is "
                "named after its config and overrides: resume with the same ones, from the same directory), or "
                "give the checkpoint's path"
            )
        config["ckpt_path"] = str(found[-1])
        _note(f"resuming from {found[-1]}")
        self._parse_ckpt_path()

    def _parse_ckpt_path(self) -> None:
        """Resume from a checkpoint read as data: its algorithm must be a loaded RLModule, the config's own.

        Replaces LightningCLI's reading (which imports whatever ``_class_path`` the file names); as there, the
        checkpoint's hyper-parameters then override the config's. ``last`` is resolved later, once the run's
        folder is named (:meth:`_resolve_last_checkpoint`).
        """
        sub = self.config.get("subcommand")
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt_path or ckpt_path in _SYMBOLIC_CKPT:
            return
        ckpt = read_checkpoint(ckpt_path)
        cls = algorithm_class(ckpt, ckpt_path)
        configured = resolve_class(str(self.config[sub]["model"]["class_path"]), RLModule, "model.class_path")
        if cls is not configured:
            raise ConfigError(
                f"checkpoint {ckpt_path!r} was written by {cls.__name__}, "
                f"but the config trains {configured.__name__}: use the same algorithm to resume"
            )
        for message in compatibility_warnings(ckpt, cls, ckpt_path):
            _warn(message)
        hparams, _ = accepted_hparams(cls, ckpt)
        if hparams:
            update = {
                sub: {"model": {"class_path": self.config[sub]["model"]["class_path"], "init_args": hparams}}
            }
            self.config = self.parser.parse_object(update, self.config)

    def before_fit(self) -> None:
        _share_log_version(self.trainer.loggers)
        for callback in self.trainer.callbacks:
            if isinstance(callback, RunSummary):
                callback.config_id = self.config_id

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        """Env-step progress bar and a ``last.ckpt`` checkpoint, unless configured otherwise."""
        configured = list(config.get("callbacks") or []) + list(callbacks)
        if config.get("enable_progress_bar", True) is not False and not any(
            isinstance(c, ProgressBar) for c in configured
        ):
            callbacks = [*callbacks, EnvStepProgressBar()]
        # not under fast_dev_run, which writes nothing (Lightning's save_last at the end of training ignores it)
        if (
            config.get("enable_checkpointing", True) is not False
            and not config.get("fast_dev_run")
            and not any(isinstance(c, ModelCheckpoint) for c in configured)
        ):
            callbacks = [*callbacks, ModelCheckpoint(save_last=True)]  # checkpoints/last.ckpt to resume from
        callbacks, config = _resume_defaults(config, configured, callbacks)
        return super()._instantiate_trainer(config, callbacks)

    def after_fit(self) -> None:
        summary = next((cb for cb in self.trainer.callbacks if isinstance(cb, RunSummary)), None)
        path = summary.written_path(self.trainer) if summary is not None else None
        if self.trainer.is_global_zero and path is not None:
            print(f"summary: {path}", flush=True)


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


@rank_zero_only
def _warn(message: str) -> None:
    print(f"accelrl: warning: {message}", file=sys.stderr, flush=True)


@rank_zero_only
def _note(message: str) -> None:
    print(f"accelrl: {message}", file=sys.stderr, flush=True)


def _run_folder(trainer: Any) -> Path | None:
    """``save_dir/name`` of the first logger entry that sets both: where the run's ``version_*`` folders are."""
    loggers = trainer.get("logger")
    for entry in loggers if isinstance(loggers, list) else [loggers]:
        init_args = entry.get("init_args") if hasattr(entry, "get") else None
        save_dir = init_args.get("save_dir") if hasattr(init_args, "get") else None
        if save_dir and _logger_name(entry):
            return Path(save_dir) / _logger_name(entry)
    return None


def _fixed_checkpoint_dir(trainer: Any) -> bool:
    """Whether the config's ``ModelCheckpoint`` sets a fixed ``dirpath`` (where Lightning's own ``last`` looks)."""
    callbacks = trainer.get("callbacks") or []
    for entry in callbacks if isinstance(callbacks, list) else [callbacks]:
        if not hasattr(entry, "get") or not str(entry.get("class_path", "")).endswith("ModelCheckpoint"):
            continue
        init_args = entry.get("init_args")
        return bool(init_args.get("dirpath")) if hasattr(init_args, "get") else False
    return False


def _logger_name(entry: Any) -> str | None:
    """The ``name`` a logger entry of the config sets (``class_path`` + ``init_args.name``), if any."""
    init_args = entry.get("init_args") if hasattr(entry, "get") else None
    name = init_args.get("name") if hasattr(init_args, "get") else None
    return name if isinstance(name, str) and name else None


def _given_on_command_line(option: str) -> bool:
    return any(a == option or a.startswith(option + "=") or a.startswith(option + ".") for a in sys.argv[2:])


def _config_args(args: list[str]) -> list[str]:
    """Only the ``--config FILE`` options of a command line."""
    out = []
    for i, arg in enumerate(args):
        if arg.startswith("--config="):
            out.append(arg)
        elif arg == "--config" and i + 1 < len(args):
            out += [arg, args[i + 1]]
    return out


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
