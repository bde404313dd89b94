"""Reading checkpoints written by ``accelrl fit``: clear errors for missing, corrupt or foreign files."""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path
from typing import Any

import torch

from lightning_accelrl.errors import ConfigError


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint dict, or raise a one-line :class:`ConfigError` naming the path."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"checkpoint {str(path)!r} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"checkpoint {str(path)!r} is unreadable or corrupt ({reason[:120]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise ConfigError(f"checkpoint {str(path)!r} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def algorithm_of(ckpt: dict[str, Any], path: str | Path) -> str:
    info = ckpt.get("accelrl")
    if not isinstance(info, dict) or "algorithm" not in info:
        raise ConfigError(f"checkpoint {str(path)!r} was not written by accelrl (no algorithm recorded)")
    return str(info["algorithm"])


def load_agent(path: str | Path, device: str = "cpu") -> tuple[Any, dict[str, Any]]:
    """Rebuild the trained module from a checkpoint; returns (module in eval mode, datamodule hyper-parameters)."""
    ckpt = read_checkpoint(path)
    class_path = algorithm_of(ckpt, path)
    module_name, _, cls_name = class_path.rpartition(".")
    cls = getattr(importlib.import_module(module_name), cls_name)
    data = ckpt.get("datamodule_hyper_parameters") or {}
    if not isinstance(data.get("env"), str):
        raise ConfigError(f"checkpoint {str(path)!r} does not record a Gymnasium env id to evaluate on")
    accepted = inspect.signature(cls.__init__).parameters
    hparams = {
        k: v for k, v in (ckpt.get("hyper_parameters") or {}).items() if k in accepted
    }  # not LightningCLI's _class_path
    model = cls(**hparams)
    model.on_load_checkpoint(ckpt)
    model.load_state_dict(ckpt["state_dict"])
    return model.to(device).eval(), data
