"""Weights from the learner to sampler processes: one flat shared-memory tensor guarded by a seqlock."""

from __future__ import annotations

import torch


def parameters_of(module: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors the samplers' policy copies receive: all parameters, in ``parameters()`` order, then the
    floating-point buffers (running observation statistics act with the weights; integer counters stay)."""
    return list(module.parameters()) + [b for b in module.buffers() if b.is_floating_point()]


def flat_parameters(params: list[torch.Tensor]) -> torch.Tensor:
    """The parameters as one float32 CPU vector (what is published)."""
    with torch.no_grad():
        return torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in params])


def load_flat(flat: torch.Tensor, params: list[torch.Tensor]) -> None:
    """Copy a vector written by :func:`flat_parameters` into ``params`` (parameters and buffers alike)."""
    with torch.no_grad():
        offset = 0
        for p in params:
            n = p.numel()
            p.copy_(flat[offset : offset + n].view_as(p))
            offset += n


class SharedWeights:
    """A flat float32 copy of a module's parameters in shared memory, with a seqlock and a policy version.

    ``publish`` (learner) bumps the sequence to odd, copies, writes the version, bumps it to even. ``fetch``
    (sampler) copies only when the sequence is even and changed, and keeps the copy only if the sequence did
    not move meanwhile (a torn read is retried at the next call). One writer, any number of readers.
    """

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.numel = sum(p.numel() for p in params)
        self.flat = torch.zeros(self.numel, dtype=torch.float32).share_memory_()
        self.meta = torch.zeros(2, dtype=torch.int64).share_memory_()  # [sequence, policy version]

    def publish(self, params: list[torch.Tensor], version: int) -> None:
        flat = flat_parameters(params)
        self.meta[0] += 1
        self.flat.copy_(flat)
        self.meta[1] = int(version)
        self.meta[0] += 1

    def fetch(self, params: list[torch.Tensor], last_seq: int) -> tuple[int, int] | None:
        """Copy new weights into ``params``; returns (sequence, version), or None if nothing new was read."""
        seq = int(self.meta[0])
        if seq == last_seq or seq % 2:
            return None
        flat = self.flat.clone()
        version = int(self.meta[1])
        if int(self.meta[0]) != seq:
            return None
        load_flat(flat, params)
        return seq, version
