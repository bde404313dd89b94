"""The large-batch rule as a DQN option: learning rate scaled with the batch, target time constant in env steps."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_accelrl import DQN, CategoricalDQN
from lightning_accelrl.algos.large_batch import scaled_lr, scaled_period, scaled_tau
from lightning_accelrl.errors import ConfigError


def test_rules() -> None:
    assert scaled_lr(1e-3, 2048, 32, "linear") == pytest.approx(64e-3)
    assert scaled_lr(1e-3, 2048, 32, "sqrt") == pytest.approx(8e-3)
    assert scaled_lr(1e-3, 2048, 32, "none") == 1e-3
    # 64 updates of tau at batch 32 move the target as far as one update at batch 2,048
    tau = scaled_tau(0.01, 2048, 32)
    assert 1 - tau == pytest.approx((1 - 0.01) ** 64)
    assert scaled_period(1000, 2048, 32) == 16 and scaled_period(10, 2048, 32) == 1
    assert scaled_tau(0.01, 32, 32) == pytest.approx(0.01) and scaled_period(250, 32, 32) == 250


@pytest.mark.parametrize("algo", [DQN, CategoricalDQN])
def test_dqn_applies_the_rule_to_its_learning_rate(algo: type) -> None:
    spec = {
        "observation_shape": [4], "observation_dtype": "float32", "discrete": True, "num_actions": 2,
        "action_dim": 0, "action_low": [], "action_high": [],
    }  # fmt: skip
    model = algo(lr=1e-3, lr_scaling="sqrt", reference_batch_size=32, env_spec=spec, hidden=(8,))
    assert model.base_lr(512) == pytest.approx(1e-3 * math.sqrt(16))
    assert algo(lr=1e-3, env_spec=spec).base_lr(512) == 1e-3  # off by default
    with pytest.raises(ConfigError, match="lr_scaling"):
        algo(lr_scaling="cubic")


def test_polyak_target_keeps_its_time_constant_in_env_steps() -> None:
    spec = {
        "observation_shape": [4], "observation_dtype": "float32", "discrete": True, "num_actions": 2,
        "action_dim": 0, "action_low": [], "action_high": [],
    }  # fmt: skip
    model = DQN(target_tau=0.01, lr_scaling="linear", reference_batch_size=32, env_spec=spec, hidden=(8,))
    model.configure_model()
    with torch.no_grad():
        for p in model.q.parameters():
            p.add_(1.0)
    before = [p.clone() for p in model.q_target.parameters()]
    model.update_target(2048)
    moved = [(t - b) / (o - b) for t, b, o in zip(model.q_target.parameters(), before, model.q.parameters())]
    frac = torch.cat([m.detach().flatten() for m in moved]).nanmean()
    assert float(frac) == pytest.approx(1 - 0.99**64, rel=1e-4)
