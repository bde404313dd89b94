"""PPO through a plain ``lightning.Trainer``: budget, zero policy lag, LR annealing, gradient clipping,
argument checks, checkpoint resume, and learning CartPole."""

from __future__ import annotations

import copy
import math

import gymnasium as gym
import lightning as L
import pytest
import torch
from foundation_helpers import trainer_kwargs

from lightning_accelrl import PPO, ExperienceDataModule
from lightning_accelrl.errors import ConfigError


def flat_params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()


class RecordingPPO(PPO):
    """Records (policy_version, parameters) each time the sampler asks for actions."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.act_log: list[tuple[int, torch.Tensor]] = []

    def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
        self.act_log.append((self.policy_version, flat_params(self)))
        return super().act(observation)


class AfterUpdate(L.Callback):
    """Parameters and learning rate after each update (version -> params), and the initial parameters."""

    def __init__(self) -> None:
        self.params: dict[int, torch.Tensor] = {}
        self.lrs: list[float] = []
        self.versions: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.params[pl_module.policy_version] = flat_params(pl_module)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.params[pl_module.policy_version] = flat_params(pl_module)
        self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])
        self.versions.append(pl_module.policy_version)


def small_ppo(**kw) -> dict:
    base = {"update_epochs": 2, "minibatch_size": 32, "hidden": (16, 16)}
    base.update(kw)
    return base


def test_top_level_imports() -> None:
    import lightning_accelrl

    assert lightning_accelrl.PPO is PPO
    assert issubclass(PPO, L.LightningModule)
    assert issubclass(ExperienceDataModule, L.LightningDataModule)


def test_fit_stops_at_budget_with_zero_policy_lag() -> None:
    L.seed_everything(0, verbose=False)
    T, B, total = 16, 4, 1000
    model = RecordingPPO(**small_ppo())
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=B, rollout_steps=T, total_env_steps=total, updates_per_epoch=5
    )
    after = AfterUpdate()
    trainer = L.Trainer(**trainer_kwargs(callbacks=[after]))
    trainer.fit(model, datamodule=dm)

    updates = math.ceil(total / (T * B))  # 16
    assert dm.updates_done == updates
    assert dm.env_steps == updates * T * B
    assert model.policy_version == updates
    assert dm.lags.histogram == {0: updates}
    assert after.versions == list(range(1, updates + 1))
    # two minibatches of 32 per epoch of 64 transitions, two epochs per update
    assert trainer.global_step == updates * 2 * 2
    assert (
        trainer.current_epoch == math.ceil(updates / 5) or trainer.current_epoch == math.ceil(updates / 5) - 1
    )

    # every rollout was collected with the weights after the previous update, none after the last one
    assert len(model.act_log) == updates * T
    versions = [v for v, _ in model.act_log]
    assert versions == sorted(versions)
    assert set(versions) == set(range(updates))
    for version, params in model.act_log:
        assert torch.equal(params, after.params[version]), version
    # and the weights did change between updates (the check above is not trivially true)
    assert not torch.equal(after.params[0], after.params[updates])

    metrics = trainer.callback_metrics
    assert metrics["env_steps"] == updates * T * B
    assert metrics["episodes"] == dm.tracker.episodes > 0
    assert "episode_return_mean" in metrics and "train/pg_loss" in metrics


def test_budget_not_a_multiple_of_the_batch_rounds_up() -> None:
    L.seed_everything(0, verbose=False)
    model = PPO(**small_ppo(update_epochs=1, minibatch_size=64))
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=2, rollout_steps=8, total_env_steps=17, updates_per_epoch=50
    )
    trainer = L.Trainer(**trainer_kwargs())
    trainer.fit(model, datamodule=dm)
    assert dm.updates_done == 2 == math.ceil(17 / 16)
    assert trainer.global_step == 2
    assert dm.progress == 1.0


def test_lr_annealing_reaches_zero() -> None:
    L.seed_everything(0, verbose=False)
    lr, T, B, total = 1e-3, 8, 2, 160  # 10 updates
    after = AfterUpdate()
    model = PPO(**small_ppo(lr=lr, anneal_lr=True, anneal_clip=True))
    dm = ExperienceDataModule("CartPole-v1", num_envs=B, rollout_steps=T, total_env_steps=total)
    L.Trainer(**trainer_kwargs(callbacks=[after])).fit(model, datamodule=dm)
    n = math.ceil(total / (T * B))
    assert len(after.lrs) == n
    assert all(a > b for a, b in zip(after.lrs, after.lrs[1:]))  # strictly decreasing
    assert after.lrs[0] >= lr * (1 - 1 / n) - 1e-12
    assert after.lrs[-1] <= lr / n + 1e-12  # ~0 at the end of the budget
    # linear in the updates
    steps = [a - b for a, b in zip(after.lrs, after.lrs[1:])]
    assert max(steps) == pytest.approx(min(steps), rel=1e-6)
    assert steps[0] == pytest.approx(lr / n, rel=1e-6)


def test_lr_constant_without_annealing() -> None:
    L.seed_everything(0, verbose=False)
    after = AfterUpdate()
    model = PPO(**small_ppo(lr=5e-4, anneal_lr=False))
    dm = ExperienceDataModule("CartPole-v1", num_envs=2, rollout_steps=8, total_env_steps=64)
    L.Trainer(**trainer_kwargs(callbacks=[after])).fit(model, datamodule=dm)
    assert after.lrs == [5e-4] * 4


class GradNorms(L.Callback):
    """Total gradient norm right after backward (unclipped) and right before the optimizer step (clipped)."""

    def __init__(self) -> None:
        self.raw: list[float] = []
        self.clipped: list[float] = []

    @staticmethod
    def norm(module) -> float:
        grads = [p.grad.detach().flatten() for p in module.parameters() if p.grad is not None]
        return float(torch.cat(grads).norm())

    def on_after_backward(self, trainer, pl_module) -> None:
        self.raw.append(self.norm(pl_module))

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.clipped.append(self.norm(pl_module))


def huge_reward_cartpole(num_envs: int) -> gym.vector.VectorEnv:
    """CartPole with rewards of 1e6: value losses around 1e12."""
    return gym.make_vec(
        "CartPole-v1",
        num_envs=num_envs,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
        wrappers=[lambda e: gym.wrappers.TransformReward(e, lambda r: 1e6 * r)],
    )


def test_gradient_clipping_acts_on_huge_losses() -> None:
    L.seed_everything(0, verbose=False)
    norms = GradNorms()
    max_norm = 0.5
    model = PPO(**small_ppo(max_grad_norm=max_norm, normalize_advantage=False))
    dm = ExperienceDataModule(huge_reward_cartpole(4), rollout_steps=16, total_env_steps=3 * 64)
    L.Trainer(**trainer_kwargs(callbacks=[norms])).fit(model, datamodule=dm)
    assert len(norms.raw) == len(norms.clipped) == 3 * 2 * 2
    assert min(norms.raw) > 1e4  # the crafted loss really is huge
    assert max(norms.clipped) <= max_norm * (1 + 1e-5)
    assert max(norms.clipped) >= max_norm * (1 - 1e-3)  # clipped to the norm, not zeroed
    assert torch.isfinite(flat_params(model)).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"lr": 0.0}, "lr"),
        ({"lr": -1e-3}, "lr"),
        ({"gamma": 0.0}, "gamma"),
        ({"gamma": 1.5}, "gamma"),
        ({"gae_lambda": 1.1}, "gae_lambda"),
        ({"clip_coef": 0.0}, "clip_coef"),
        ({"update_epochs": 0}, "update_epochs"),
        ({"minibatch_size": 0}, "minibatch_size"),
        ({"max_grad_norm": 0.0}, "max_grad_norm"),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        PPO(**kwargs)


def test_needs_an_env_spec() -> None:
    model = PPO()
    with pytest.raises(ConfigError, match="env_spec"):
        model.configure_model()


def test_checkpoint_resume_restores_counters_and_optimizer(tmp_path) -> None:
    L.seed_everything(0, verbose=False)
    T, B, total = 8, 4, 8 * 4 * 10  # 10 updates; the first run stops after one epoch of 4

    def dm() -> ExperienceDataModule:
        return ExperienceDataModule(
            "CartPole-v1", num_envs=B, rollout_steps=T, total_env_steps=total, updates_per_epoch=4
        )

    model1, dm1 = PPO(**small_ppo()), dm()
    trainer1 = L.Trainer(**trainer_kwargs(max_epochs=1))
    trainer1.fit(model1, datamodule=dm1)
    assert dm1.updates_done == 4 and model1.policy_version == 4
    ckpt = tmp_path / "ppo.ckpt"
    trainer1.save_checkpoint(ckpt)
    opt_state1 = copy.deepcopy(trainer1.optimizers[0].state_dict())
    params1 = flat_params(model1)
    episodes1 = dm1.tracker.episodes

    seen = {}

    class AtStart(L.Callback):
        def on_train_start(self, trainer, pl_module) -> None:
            seen["policy_version"] = pl_module.policy_version
            seen["updates_done"] = trainer.datamodule.updates_done
            seen["episodes"] = trainer.datamodule.tracker.episodes
            seen["opt"] = copy.deepcopy(trainer.optimizers[0].state_dict())  # live tensors otherwise
            seen["params"] = flat_params(pl_module)

    L.seed_everything(1, verbose=False)  # a different init: only the checkpoint can make them equal
    model2, dm2 = PPO(**small_ppo()), dm()
    trainer2 = L.Trainer(**trainer_kwargs(callbacks=[AtStart()], max_epochs=-1))
    trainer2.fit(model2, datamodule=dm2, ckpt_path=ckpt)

    assert seen["policy_version"] == 4
    assert seen["updates_done"] == 4
    assert seen["episodes"] == episodes1
    assert torch.equal(seen["params"], params1)
    opt2 = seen["opt"]
    assert opt2["param_groups"][0]["lr"] == opt_state1["param_groups"][0]["lr"]
    assert opt2["state"].keys() == opt_state1["state"].keys() and opt_state1["state"]
    for k, st in opt_state1["state"].items():
        assert torch.equal(opt2["state"][k]["step"], st["step"])
        assert torch.equal(opt2["state"][k]["exp_avg"], st["exp_avg"])
        assert torch.equal(opt2["state"][k]["exp_avg_sq"], st["exp_avg_sq"])
    # and training went on to the budget from there
    assert dm2.updates_done == 10
    assert model2.policy_version == 10
    assert dm2.lags.histogram == {0: 6}


class StopAtReturn(L.Callback):
    """Stops when the windowed episode return mean reaches ``target``; records the env steps it took."""

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


@pytest.mark.slow
def test_ppo_learns_cartpole() -> None:
    """rl-zoo-like hyper-parameters reach a mean return of 475 (over 100 episodes) within 100k env steps."""
    L.seed_everything(0, verbose=False)
    model = PPO(
        lr=1e-3,
        gamma=0.98,
        gae_lambda=0.8,
        update_epochs=20,
        minibatch_size=256,
        anneal_lr=True,
        anneal_clip=True,
    )
    dm = ExperienceDataModule("CartPole-v1", num_envs=8, rollout_steps=32, total_env_steps=100_000, seed=0)
    stop = StopAtReturn(475.0)
    L.Trainer(**trainer_kwargs(callbacks=[stop], max_epochs=-1)).fit(model, datamodule=dm)
    assert stop.reached_at is not None, f"best mean return {stop.best:.1f} in 100k steps"
    assert stop.reached_at <= 100_000


def test_action_distribution_matches_torch_distributions() -> None:
    """The hand-written ActionDist used by PPO/A2C: log-probs, entropies and sampling frequencies."""
    from lightning_accelrl.nets import ActionDist

    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 3, generator=g)
    dist, ref = ActionDist(logits), torch.distributions.Categorical(logits=logits)
    actions = torch.randint(0, 3, (5,), generator=g)
    torch.testing.assert_close(dist.log_prob(actions), ref.log_prob(actions))
    torch.testing.assert_close(dist.entropy(), ref.entropy())
    assert torch.equal(dist.mode(), logits.argmax(-1))
    torch.manual_seed(0)
    n = 20_000
    samples = ActionDist(logits.expand(n, 5, 3)).sample()
    freq = torch.stack([(samples == k).float().mean(0) for k in range(3)], -1)
    torch.testing.assert_close(freq, ref.probs, atol=0.015, rtol=0)

    mean, log_std = torch.randn(4, 2, generator=g), torch.randn(2, generator=g)
    dist = ActionDist(mean, log_std)
    ref = torch.distributions.Normal(mean, log_std.exp())
    a = torch.randn(4, 2, generator=g)
    torch.testing.assert_close(dist.log_prob(a), ref.log_prob(a).sum(-1))
    torch.testing.assert_close(dist.entropy(), ref.entropy().sum(-1))
    s = ActionDist(mean.expand(n, 4, 2), log_std).sample()
    torch.testing.assert_close(s.mean(0), mean, atol=0.05 * float(log_std.exp().max()), rtol=0)
    torch.testing.assert_close(s.std(0), log_std.exp().expand(4, 2), atol=0.03, rtol=0.02)
