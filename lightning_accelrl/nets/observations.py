"""Per-key encoders for ``Dict`` observations, which the env adapter delivers as one float vector.

Each image key (3-D part) goes through a CNN chosen by its size (as ``network="auto"`` chooses), every other key
is used as it is; the features are concatenated for the MLP heads. A Dict of vectors needs no encoder at all:
the flat vector already is their concatenation.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_accelrl.envs.base import EnvSpec, ObservationPart
from lightning_accelrl.nets.cnn import build_encoder


class DictEncoder(nn.Module):
    """``[N, D]`` flat Dict observations -> ``[N, out_dim]`` features (CNN features for image keys)."""

    def __init__(self, parts: tuple[ObservationPart, ...], channels_last: bool = False) -> None:
        super().__init__()
        self.parts = parts
        self.sizes = [p.size for p in parts]
        self.encoders = nn.ModuleDict(
            {
                str(i): build_encoder("auto", p.shape, channels_last, p.image_layout or "CHW")
                for i, p in enumerate(parts)
                if len(p.shape) == 3
            }
        )
        self.out_dim = sum(
            self.encoders[str(i)].out_dim if str(i) in self.encoders else p.size for i, p in enumerate(parts)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = []
        for i, (chunk, part) in enumerate(zip(x.split(self.sizes, -1), self.parts, strict=True)):
            key = str(i)
            if key in self.encoders:
                image = chunk.reshape(-1, *part.shape)
                if part.dtype == torch.uint8:
                    image = image / 255.0
                chunk = self.encoders[key](image)
            out.append(chunk)
        return torch.cat(out, -1)


def dict_encoder(spec: EnvSpec, channels_last: bool = False) -> DictEncoder | None:
    """The encoder a Dict observation with image keys needs; None when a plain MLP can read it."""
    if not any(len(p.shape) == 3 for p in spec.observation_parts):
        return None
    return DictEncoder(spec.observation_parts, channels_last)
