"""What a DDP rank logged and its parameters, kept in the rank's own process.

The DDP tests run their training in a script started with ``sys.executable`` (Lightning's DDP re-runs it for the
other rank; ``torchrun`` starts it once per node); those scripts import this module, found through
:func:`with_tests_dir_on_path`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from lightning.pytorch.loggers import Logger

TESTS_DIR = Path(__file__).resolve().parent


def with_tests_dir_on_path(env: dict[str, str]) -> dict[str, str]:
    """``env`` with this folder first on ``PYTHONPATH``, so a test's script can import the test helpers."""
    paths = [str(TESTS_DIR), *filter(None, [env.get("PYTHONPATH")])]
    return {**env, "PYTHONPATH": os.pathsep.join(paths)}


def flat(module: torch.nn.Module) -> torch.Tensor:
    """All parameters of ``module`` as one detached vector (for comparing ranks exactly)."""
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


class MemLogger(Logger):
    """Keeps every row this rank logs as floats (not rank-zero-only: each rank records its own view)."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, float]] = []

    @property
    def name(self) -> str:
        return "mem"

    @property
    def version(self) -> int:
        return 0

    def log_hyperparams(self, params, *args, **kwargs) -> None:
        pass

    def log_metrics(self, metrics, step=None) -> None:
        self.rows.append({k: float(v) for k, v in metrics.items()})
