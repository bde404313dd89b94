"""Test session settings: one torch thread; the counting env is registered (see foundation_helpers)."""

from __future__ import annotations

import foundation_helpers  # noqa: F401 - registers the counting envs with Gymnasium
import torch

torch.set_num_threads(1)


def pytest_configure(config) -> None:
    # lightning 2.6 + torch 2.13: a deprecation inside Lightning's own pytree helper, on every fit
    config.addinivalue_line("filterwarnings", "ignore:.*LeafSpec")
