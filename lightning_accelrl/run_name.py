"""What a run is: its name (the recipe and what was overridden) and its config identity (the config up to seeds).

``accelrl fit --recipe ppo-cartpole --data.env Acrobot-v1`` logs into ``runs/ppo-cartpole+data.env=Acrobot-v1``
and its config identity differs from the plain recipe's, so ``accelrl plot`` never averages the two. Seeds,
resumption and how a run logs are left out of both: seeds of one config share a folder and a curve. The name
is computed from the command line alone, the same way in every process (DDP re-launches the command).

Torch-free: ``accelrl plot`` uses it.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

#: config keys (and key prefixes) that do not change what a run learns: seeds, resumption, logging and display,
#: and the env spec (derived from the env; a resumed run takes it from its checkpoint)
IGNORED = (
    "model.init_args.env_spec",
    "seed_everything",
    "data.seed",
    "data.init_args.seed",
    "ckpt_path",
    "config",
    "summary",
    "torch_threads",
    "trainer.logger",
    "trainer.callbacks",
    "trainer.default_root_dir",
    "trainer.enable_progress_bar",
    "trainer.enable_model_summary",
    "trainer.enable_checkpointing",
    "trainer.log_every_n_steps",
)
MAX_NAME = (
    160  # longer override lists are named by a hash (ppo-cartpole+3f2a9c1d); file names may hold 255 bytes
)
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+,-]")


def _ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in IGNORED)


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as ``{"a.b.c": leaf}`` (lists and other values are leaves)."""
    if not isinstance(cfg, dict):
        return {prefix: cfg} if prefix else {}
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
        if isinstance(value, dict) and not value:
            out[f"{prefix}.{key}" if prefix else str(key)] = {}
    return out


def identity_items(cfg: dict[str, Any]) -> dict[str, Any]:
    """The leaves of ``cfg`` that make up the run's identity (seeds, logging and resumption left out)."""
    return {k: v for k, v in flatten(cfg).items() if not _ignored(k)}


def config_id(cfg: dict[str, Any]) -> str:
    """A short stable hash of the config up to seeds (8 hex digits)."""
    text = json.dumps(identity_items(cfg), sort_keys=True, default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _show(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), default=str)


def overrides(base: dict[str, Any], cfg: dict[str, Any]) -> list[str]:
    """``key=value`` for every identity leaf where ``cfg`` differs from ``base`` (``model.init_args.lr`` shown
    as ``model.lr``), sorted."""
    old, new = identity_items(base), identity_items(cfg)
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k, _MISSING) != new.get(k, _MISSING))
    # a leaf that became a dict (``env_kwargs: null`` given ``{continuous: true}``) is named by its new leaves, a
    # dict that became a leaf by that leaf
    gone = [
        k
        for k in changed
        if k not in new and any(n.startswith(k + ".") or k.startswith(n + ".") for n in new)
    ]
    return [f"{k.replace('.init_args.', '.')}={_show(new.get(k))}" for k in changed if k not in gone]


_MISSING = object()


def run_name(name: str, changed: list[str]) -> str:
    """``name+key=value+...`` (file-name safe), or ``name+HASH`` when that would be longer than ``MAX_NAME``."""
    if not changed:
        return name
    full = "+".join([name, *(_UNSAFE.sub("_", c) for c in changed)])
    if len(full) <= MAX_NAME:
        return full
    return f"{name}+{hashlib.sha1('+'.join(changed).encode()).hexdigest()[:8]}"
