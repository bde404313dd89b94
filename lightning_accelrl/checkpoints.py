"""Reading checkpoints written by ``accelrl fit`` as data: nothing in a checkpoint file runs code.

A checkpoint is loaded with ``torch.load(weights_only=True)`` (tensors, dicts, lists, strings, numbers only: a
pickled object that would run code is refused). The algorithm it names is looked up only among loaded
:class:`~lightning_accelrl.algos.base.RLModule` subclasses (:func:`lightning_accelrl.trusted.resolve_class`),
never imported on the file's say-so; its env id must be registered already. Missing, corrupt, foreign or
hostile files raise a one-line :class:`ConfigError` naming the path.
"""

from __future__ import annotations

import inspect
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from lightning_accelrl.errors import ConfigError


class CheckpointWarning(UserWarning):
    """The checkpoint loads but may not reproduce its run (another library version, options no longer known)."""


#: hyper-parameters Lightning's CLI records beside the algorithm's own (never passed to ``__init__``)
LIGHTNING_KEYS = ("_class_path", "_instantiator")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint dict as data only, or raise a one-line :class:`ConfigError` naming the path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(
            f"checkpoint {str(path)!r} holds Python objects other than tensors and plain data: refused "
            "(checkpoints are loaded as data only)"
        ) from None
    except Exception as exc:
        raise ConfigError(f"checkpoint {str(path)!r} is unreadable or corrupt ({_first_line(exc)})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"checkpoint {str(path)!r} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:120]


def algorithm_of(ckpt: dict[str, Any], path: str | Path) -> str:
    """The class path of the algorithm that wrote ``ckpt`` (a string; not yet resolved)."""
    info = ckpt.get("accelrl")
    if not isinstance(info, dict) or not isinstance(info.get("algorithm"), str):
        raise ConfigError(f"checkpoint {str(path)!r} was not written by accelrl (no algorithm recorded)")
    return info["algorithm"]


def algorithm_class(ckpt: dict[str, Any], path: str | Path) -> type:
    """The loaded ``RLModule`` subclass ``ckpt`` names (the built-ins, or classes the user imported/registered)."""
    import lightning_accelrl.algos  # noqa: F401 - the built-in algorithms are known
    from lightning_accelrl.algos.base import RLModule
    from lightning_accelrl.trusted import resolve_class

    try:
        cls = resolve_class(algorithm_of(ckpt, path), RLModule, "algorithm")
        hparams = ckpt.get("hyper_parameters") or {}
        if hparams.get("_class_path") is not None:
            resolve_class(hparams["_class_path"], RLModule, "algorithm")
        for name in _class_paths(hparams):  # e.g. a user network: only resolved later, but never imported
            resolve_class(name, object, "class")
    except ConfigError as exc:
        raise ConfigError(f"checkpoint {str(path)!r}: {exc}") from None
    return cls


def _class_paths(value: Any) -> list[Any]:
    """Every ``class_path`` value nested in ``value`` (dicts and lists), ``_class_path`` excluded."""
    if isinstance(value, dict):
        found = [value["class_path"]] if "class_path" in value else []
        return found + [p for v in value.values() for p in _class_paths(v)]
    if isinstance(value, (list, tuple)):
        return [p for v in value for p in _class_paths(v)]
    return []


def accepted_hparams(cls: type, ckpt: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The checkpoint's hyper-parameters ``cls.__init__`` accepts, and the names of those it no longer accepts."""
    hparams = ckpt.get("hyper_parameters") or {}
    if not isinstance(hparams, dict):
        return {}, []
    params = inspect.signature(cls.__init__).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    own = {k: v for k, v in hparams.items() if k not in LIGHTNING_KEYS}
    unknown = [] if takes_any else sorted(k for k in own if k not in params)
    return {k: v for k, v in own.items() if k not in unknown}, unknown


def compatibility_warnings(ckpt: dict[str, Any], cls: type, path: str | Path) -> list[str]:
    """One line per reason the checkpoint may not reproduce its run: another library version, dropped options."""
    from lightning_accelrl import __version__

    out = []
    written_by = (ckpt.get("accelrl") or {}).get("version")
    if written_by is None:
        out.append(f"checkpoint {str(path)!r} records no lightning_accelrl version (this is {__version__})")
    elif written_by != __version__:
        out.append(
            f"checkpoint {str(path)!r} was written by lightning_accelrl {written_by} (this is {__version__})"
        )
    _, unknown = accepted_hparams(cls, ckpt)
    if unknown:
        out.append(
            f"checkpoint {str(path)!r}: {cls.__name__} no longer accepts {', '.join(unknown)}; ignored"
        )
    return out


def check_env_id(env: Any, path: str | Path) -> str:
    """The checkpoint's env id, if it names an env already known (registered, or its module already imported)."""
    if not isinstance(env, str) or not env:
        raise ConfigError(
            f"checkpoint {str(path)!r} does not record a Gymnasium env id to evaluate on (its run trained on an "
            "env factory or object): give the env to play (accelrl evaluate --env-factory mypkg.envs:make_env; "
            "in Python load_agent(path, check_env=False) and build it yourself)"
        )
    from lightning_accelrl.envs.gym import check_env_id as check_known

    try:
        check_known(env, allow_import=False)
    except ConfigError as exc:
        raise ConfigError(f"checkpoint {str(path)!r}: {exc}") from None
    return env


def warn_compatibility(ckpt: dict[str, Any], cls: type, path: str | Path) -> None:
    """Issue each :func:`compatibility_warnings` line as a :class:`CheckpointWarning`."""
    for message in compatibility_warnings(ckpt, cls, path):
        warnings.warn(message, CheckpointWarning, stacklevel=3)


def load_agent(path: str | Path, device: str = "cpu", check_env: bool = True) -> tuple[Any, dict[str, Any]]:
    """Rebuild the trained module from a checkpoint; returns (module in eval mode, datamodule hyper-parameters).

    ``check_env``: the checkpoint must record an env id already known (to evaluate on it); off when the caller
    plays an env of its own. A different library version, or hyper-parameters the class no longer accepts, issue
    a :class:`CheckpointWarning`.
    """
    ckpt = read_checkpoint(path)
    cls = algorithm_class(ckpt, path)
    data = ckpt.get("datamodule_hyper_parameters") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"checkpoint {str(path)!r} has no data module hyper-parameters")
    if check_env:
        check_env_id(data.get("env"), path)
    hparams, _ = accepted_hparams(cls, ckpt)
    warn_compatibility(ckpt, cls, path)
    try:
        model = cls(**hparams)
        model.on_load_checkpoint(ckpt)
        model.load_state_dict(ckpt["state_dict"])
    except ConfigError as exc:
        raise ConfigError(f"checkpoint {str(path)!r}: {exc}") from None
    except (TypeError, ValueError, RuntimeError, KeyError) as exc:
        raise ConfigError(
            f"checkpoint {str(path)!r} cannot be loaded into {cls.__name__} ({_first_line(exc)})"
        ) from None
    return model.to(device).eval(), data
