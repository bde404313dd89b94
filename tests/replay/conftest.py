"""Fixtures for the replay-table tests: small TensorDict items whose field ``x`` identifies each item."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from tensordict import TensorDict


def _make_items(n: int, start: int = 0) -> TensorDict:
    x = torch.arange(start, start + n, dtype=torch.float32)
    return TensorDict(
        {
            "x": x,
            "obs": x[:, None].expand(n, 3).clone(),
            "next": {"obs": (x + 1)[:, None].expand(n, 3).clone()},
        },
        batch_size=[n],
    )


@pytest.fixture
def make_items() -> Callable[..., TensorDict]:
    """``make_items(n, start=0)``: n items with ``x = start .. start + n - 1`` and a nested field."""
    return _make_items
