"""A2C through a plain ``lightning.Trainer``: one update per rollout, zero policy lag, optimizers,
gradient clipping, argument checks, continuous actions, and learning CartPole."""

from __future__ import annotations

import math

import gymnasium as gym
import lightning as L
import pytest
import torch
from foundation_helpers import trainer_kwargs

from lightning_accelrl import A2C, PPO, ExperienceDataModule
from lightning_accelrl.errors import ConfigError


def flat_params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


class RecordingA2C(A2C):
    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.act_log: list[tuple[int, torch.Tensor]] = []

    def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
        self.act_log.append((self.policy_version, flat_params(self)))
        return super().act(observation)


class AfterUpdate(L.Callback):
    def __init__(self) -> None:
        self.params: dict[int, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.params[pl_module.policy_version] = flat_params(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.params[pl_module.policy_version] = flat_params(pl_module)


def test_top_level_import() -> None:
    import lightning_accelrl

    assert lightning_accelrl.A2C is A2C


def test_fit_one_update_per_rollout_with_zero_policy_lag() -> None:
    L.seed_everything(0, verbose=False)
    T, B, total = 5, 4, 400
    model = RecordingA2C(hidden=(16, 16))
    after = AfterUpdate()
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=B, rollout_steps=T, total_env_steps=total, updates_per_epoch=7
    )
    trainer = L.Trainer(**trainer_kwargs(callbacks=[after]))
    trainer.fit(model, datamodule=dm)
    updates = math.ceil(total / (T * B))  # 20
    assert dm.updates_done == updates
    assert trainer.global_step == updates  # exactly one optimizer step per rollout
    assert model.policy_version == updates
    assert dm.lags.histogram == {0: updates}
    assert len(model.act_log) == updates * T
    assert sorted({v for v, _ in model.act_log}) == list(range(updates))
    for version, params in model.act_log:
        assert torch.equal(params, after.params[version]), version
    assert not torch.equal(after.params[0], after.params[updates])
    assert trainer.callback_metrics["env_steps"] == updates * T * B


@pytest.mark.parametrize("name,cls", [("rmsprop", torch.optim.RMSprop), ("adam", torch.optim.Adam)])
def test_optimizer_choice(name: str, cls: type) -> None:
    model = A2C(optimizer=name, lr=3e-4, rmsprop_alpha=0.9, eps=1e-6, env_spec=_cartpole_spec())
    model.configure_model()
    opt = model.configure_optimizers()
    assert type(opt) is cls
    group = opt.param_groups[0]
    assert group["lr"] == 3e-4 and group["eps"] == 1e-6
    if name == "rmsprop":
        assert group["alpha"] == 0.9
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def _cartpole_spec() -> dict:
    from lightning_accelrl.envs.gym import probe_spec

    return probe_spec("CartPole-v1").to_dict()


def test_gradient_clipping_acts_on_huge_losses() -> None:
    L.seed_everything(0, verbose=False)
    raw, clipped = [], []

    def norm(module) -> float:
        return float(torch.cat([p.grad.flatten() for p in module.parameters() if p.grad is not None]).norm())

    class Norms(L.Callback):
        def on_after_backward(self, trainer, pl_module) -> None:
            raw.append(norm(pl_module))

        def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
            clipped.append(norm(pl_module))

    venv = gym.make_vec(
        "CartPole-v1",
        num_envs=4,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        wrappers=[lambda e: gym.wrappers.TransformReward(e, lambda r: 1e6 * r)],
    )
    model = A2C(max_grad_norm=0.25)
    dm = ExperienceDataModule(venv, rollout_steps=8, total_env_steps=5 * 32)
    L.Trainer(**trainer_kwargs(callbacks=[Norms()])).fit(model, datamodule=dm)
    assert len(raw) == len(clipped) == 5
    assert min(raw) > 1e4
    assert max(clipped) <= 0.25 * (1 + 1e-5)
    assert min(clipped) >= 0.25 * (1 - 1e-3)
    assert torch.isfinite(flat_params(model)).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -7e-4}, "lr"),
        ({"gamma": 0.0}, "gamma"),
        ({"gae_lambda": -0.1}, "gae_lambda"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"optimizer": "sgd"}, "optimizer"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        A2C(**kwargs)


@pytest.mark.parametrize("cls", [A2C, PPO])
def test_continuous_actions(cls: type) -> None:
    """Pendulum: Gaussian policy; actions [T, B, 1] float; the log-std is trained."""
    L.seed_everything(0, verbose=False)
    batches = []

    class Keep(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            batches.append(batch.clone())

    kw = {"hidden": (16,)}
    if cls is PPO:
        kw.update(update_epochs=1, minibatch_size=32)
    model = cls(**kw)
    dm = ExperienceDataModule("Pendulum-v1", num_envs=2, rollout_steps=16, total_env_steps=3 * 32)
    L.Trainer(**trainer_kwargs(callbacks=[Keep()])).fit(model, datamodule=dm)
    assert model.net.log_std.shape == (1,)
    assert not torch.equal(model.net.log_std.detach(), torch.zeros(1))
    batch = batches[0]
    assert batch["action"].shape == (16, 2, 1) and batch["action"].dtype == torch.float32
    assert batch["action"].abs().max() > 0  # sampled, not all zero
    assert batch["next", "reward"].max() <= 0  # Pendulum's rewards are costs
    assert dm.lags.histogram == {0: 3}


class StopAtReturn(L.Callback):
    def __init__(self, target: float) -> None:
        self.target = target
        self.reached_at: int | None = None
        self.best = float("-inf")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        stats = trainer.datamodule.statistics()
        mean = stats.get("episode_return_mean", float("-inf"))
        self.best = max(self.best, mean)
        if mean >= self.target:
            self.reached_at = trainer.datamodule.env_steps
            trainer.should_stop = True


def a2c_cartpole_recipe() -> dict:
    """The shipped a2c-cartpole recipe's model and data arguments (rl-zoo's A2C settings: 8 envs x 5 steps,
    RMSprop, lr 7e-4; final mean 500 on seeds 0-4 after its 500k budget: benchmarks/RESULTS.md)."""
    from importlib.resources import files

    import yaml

    recipe = yaml.safe_load((files("lightning_accelrl") / "recipes" / "a2c-cartpole.yaml").read_text())
    data = {k: v for k, v in recipe["data"].items() if k != "env"}
    return {"model": recipe["model"]["init_args"], "data": data}


A2C_CARTPOLE = a2c_cartpole_recipe()


@pytest.mark.slow
def test_a2c_learns_cartpole() -> None:
    L.seed_everything(0, verbose=False)
    model = A2C(**A2C_CARTPOLE["model"])
    dm = ExperienceDataModule("CartPole-v1", seed=0, **A2C_CARTPOLE["data"])
    stop = StopAtReturn(475.0)
    L.Trainer(**trainer_kwargs(callbacks=[stop], max_epochs=-1)).fit(model, datamodule=dm)
    assert stop.reached_at is not None, f"best mean return {stop.best:.1f}"
    assert stop.reached_at <= A2C_CARTPOLE["data"]["total_env_steps"]
