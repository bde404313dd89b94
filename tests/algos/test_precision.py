"""Lightning's mixed precision (``Trainer(precision="bf16-mixed")``) with every kind of algorithm, on the CPU.

The updates run under bf16 autocast (matrix products in bf16 except the networks' output layers, parameters and
optimizer state in fp32); the optimizers are fused there as in full precision, and the gradients are clipped
before the step although Lightning's mixed-precision plugin refuses to clip for fused optimizers (bf16 has no
gradient scaler, so the library clips the true gradients itself).
"""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch
from foundation_helpers import trainer_kwargs
from torch import nn

from lightning_accelrl import DQN, PPO, SAC, ExperienceDataModule
from lightning_accelrl.nets.continuous import EnsembleLinear
from lightning_accelrl.nets.mlp import OutputLinear

CASES = {
    "dqn": (
        lambda: DQN(hidden=(32,)),
        "CartPole-v1",
        {"batch_size": 32, "replay_ratio": 8.0, "learning_starts": 64},
    ),
    "ppo": (lambda: PPO(hidden=(32,), minibatch_size=32), "CartPole-v1", {"rollout_steps": 32}),
    "sac": (
        lambda: SAC(actor_hidden=(32,), critic_hidden=(32,), random_steps=64),
        "Pendulum-v1",
        {"batch_size": 32, "replay_ratio": 8.0, "learning_starts": 64},
    ),
}


class GradientNorms(L.Callback):
    """The global gradient norm each optimizer step sees (after clipping, before the step)."""

    def __init__(self) -> None:
        self.norms: list[float] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:  # noqa: ANN001
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.norms.append(float(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads]))))


class LinearOutputDtypes(L.Callback):
    """The dtypes of the linear layers' outputs seen during training batches (not while acting): the networks'
    output layers (``OutputLinear``, the critics' last ``EnsembleLinear``) and the layers inside, apart."""

    def __init__(self) -> None:
        self.inner: set[torch.dtype] = set()
        self.outputs: set[torch.dtype] = set()
        self.training = False

    def on_fit_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        for module in pl_module.modules():
            if isinstance(module, OutputLinear) or (isinstance(module, EnsembleLinear) and module.output):
                module.register_forward_hook(functools.partial(self.record, self.outputs))
            elif isinstance(module, nn.Linear | EnsembleLinear):
                module.register_forward_hook(functools.partial(self.record, self.inner))

    def record(self, seen: set, module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        if self.training:
            seen.add(output.dtype)

    def on_train_batch_start(self, *args) -> None:  # noqa: ANN002
        self.training = True

    def on_train_batch_end(self, *args) -> None:  # noqa: ANN002
        self.training = False


def fit(name: str, precision: str) -> tuple[L.LightningModule, LinearOutputDtypes]:
    make, env, data = CASES[name]
    L.seed_everything(0, verbose=False)
    model, seen = make(), LinearOutputDtypes()
    dm = ExperienceDataModule(env, num_envs=2, total_env_steps=400, seed=0, **data)
    trainer = L.Trainer(**trainer_kwargs(precision=precision), max_epochs=-1, callbacks=[seen])
    trainer.fit(model, datamodule=dm)
    return model, seen


def optimizers(model: L.LightningModule) -> list[torch.optim.Optimizer]:
    found = model.trainer.optimizers
    return list(found) if isinstance(found, list | tuple) else [found]


@pytest.mark.parametrize("name", sorted(CASES))
def test_bf16_mixed_runs_the_updates_in_bf16_with_fused_optimizers(name: str) -> None:
    model, seen = fit(name, "bf16-mixed")
    assert seen.inner == {torch.bfloat16}  # every inner layer of every update ran under autocast
    assert seen.outputs == {torch.float32}  # the output layers (logits, values, Q, actions) in float32
    assert all(opt.defaults["fused"] for opt in optimizers(model))
    params = [p for p in model.parameters() if p.requires_grad]
    assert all(p.dtype == torch.float32 and torch.isfinite(p).all() for p in params)
    assert all(
        state["exp_avg"].dtype == torch.float32 for opt in optimizers(model) for state in opt.state.values()
    )


@pytest.mark.parametrize("name", ["dqn", "sac"])
def test_full_precision_keeps_fused_optimizers(name: str) -> None:
    model, seen = fit(name, "32-true")
    assert seen.inner == seen.outputs == {torch.float32}
    assert all(opt.defaults["fused"] for opt in optimizers(model))


@pytest.mark.parametrize("precision", ["bf16-mixed", "32-true"])
def test_gradients_are_clipped_to_max_grad_norm_in_every_precision(precision: str) -> None:
    L.seed_everything(0, verbose=False)
    model, norms = DQN(hidden=(32,), max_grad_norm=1e-3), GradientNorms()
    dm = ExperienceDataModule("CartPole-v1", num_envs=2, total_env_steps=300, seed=0, **CASES["dqn"][2])
    trainer = L.Trainer(**trainer_kwargs(precision=precision), max_epochs=-1, callbacks=[norms])
    trainer.fit(model, datamodule=dm)
    assert len(norms.norms) > 10
    assert max(norms.norms) <= 1e-3 * (1 + 1e-4)  # the TD loss's raw gradients are far larger than 1e-3
