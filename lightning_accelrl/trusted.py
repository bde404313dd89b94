"""Resolving class names found in files (checkpoints, configs of a finished run) without running their code.

A checkpoint is data: the names it carries (its algorithm, a user network's ``class_path``) are looked up only
among classes that are already loaded in this process (the built-ins, and whatever the user imported or
registered). Nothing is imported on a file's say-so, so a crafted file cannot make us import a module with
side effects or call an arbitrary callable. Users make their own classes known by importing their module first
(``accelrl evaluate --import mypkg.nets``) or with :func:`register`.
"""

from __future__ import annotations

import sys

from lightning_accelrl.errors import ConfigError

_REGISTRY: dict[str, type] = {}


def class_path(cls: type) -> str:
    """``module.QualName`` of a class, the form stored in checkpoints."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register(cls: type) -> type:
    """Make ``cls`` resolvable by its class path (usable as a decorator)."""
    _REGISTRY[class_path(cls)] = cls
    return cls


def resolve_class(path: str, base: type, what: str = "class") -> type:
    """The class ``path`` names (``pkg.mod.Name`` or ``pkg.mod:Name``), if already loaded and a subclass of ``base``.

    Raises a one-line :class:`ConfigError` otherwise; never imports a module.
    """
    if not isinstance(path, str) or not path:
        raise ConfigError(f"{what} name must be a non-empty string, got {path!r}")
    path = path.replace(":", ".")
    cls = _REGISTRY.get(path)
    if cls is None:
        module_name, _, qualname = path.rpartition(".")
        module = sys.modules.get(module_name)
        cls = getattr(module, qualname, None) if module is not None else None
    if cls is not None and not (isinstance(cls, type) and issubclass(cls, base)):
        raise ConfigError(f"{what} {path!r} is not a {base.__name__} subclass")
    if cls is None:
        top = path.rpartition(".")[0] or path
        raise ConfigError(
            f"{what} {path!r} is not loaded: import its module first (e.g. --import {top}) or register it "
            "with lightning_accelrl.trusted.register"
        )
    return cls
