"""The large-batch rule (Stooke & Abbeel, 2018): train with batch ``B`` as with a reference batch ``B0``.

With the replay ratio kept, batch ``k·B0`` makes ``k``× fewer updates per env step. The learning rate is scaled
(``linear``: ``k``×, ``sqrt``: ``√k``×, ``none``) and the target network keeps its time constant in env steps:
a Polyak rate ``τ`` per update becomes ``1 − (1 − τ)^k``, a hard copy every ``P`` updates becomes one every
``P / k`` updates. When to use which rule, and what it gave on CartPole: ``docs/dqn.md``.
"""

from __future__ import annotations

import math
from typing import Literal

LrScaling = Literal["none", "linear", "sqrt"]


def batch_factor(batch_size: int, reference_batch_size: int) -> float:
    return batch_size / reference_batch_size


def scaled_lr(lr: float, batch_size: int, reference_batch_size: int, rule: LrScaling) -> float:
    """The learning rate for ``batch_size`` given ``lr`` tuned at ``reference_batch_size``."""
    k = batch_factor(batch_size, reference_batch_size)
    return lr * {"linear": k, "sqrt": math.sqrt(k), "none": 1.0}[rule]


def scaled_tau(tau: float, batch_size: int, reference_batch_size: int) -> float:
    """Polyak rate per update keeping the target's time constant in env steps."""
    return 1.0 - (1.0 - tau) ** batch_factor(batch_size, reference_batch_size)


def scaled_period(period: int, batch_size: int, reference_batch_size: int) -> int:
    """Hard-copy period in updates keeping the copy interval in env steps (at least every update)."""
    return max(1, round(period / batch_factor(batch_size, reference_batch_size)))
