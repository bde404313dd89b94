"""Errors of replay calls that carry data: what a timed-out insert had already done."""

from __future__ import annotations

import torch


class InsertTimeout(TimeoutError):
    """An insert that timed out: the items admitted before the deadline stay inserted; ``keys`` are theirs (in
    order), so a caller can retry with the rest (``items[err.num_inserted:]``)."""

    def __init__(self, message: str, keys: torch.Tensor | None = None) -> None:
        super().__init__(message)
        self.keys = torch.zeros(0, dtype=torch.int64) if keys is None else keys

    @property
    def num_inserted(self) -> int:
        return int(self.keys.numel())

    def __reduce__(self) -> tuple:
        return (InsertTimeout, (str(self), self.keys))
