"""SAC, TD3 and DDPG: their loss terms against hand computations, the critic ensemble, the delayed actor, the
one-line refusals, and short runs through the experience source."""

from __future__ import annotations

import math

import lightning as L
import pytest
import torch
from foundation_helpers import trainer_kwargs
from torch import nn

from lightning_accelrl import DDPG, SAC, TD3, ExperienceDataModule
from lightning_accelrl.algos.off_policy import loss_critic, td_target
from lightning_accelrl.algos.sac import loss_actor, loss_alpha, soft_q_target
from lightning_accelrl.algos.td3 import smoothed_target_action
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.continuous import (
    ActionScale,
    CriticEnsemble,
    EnsembleLinear,
    SquashedGaussianActor,
    squashed_sample,
)

PENDULUM = EnvSpec(
    observation_shape=(3,),
    observation_dtype=torch.float32,
    discrete=False,
    action_dim=1,
    action_low=(-2.0,),
    action_high=(2.0,),
)


# ----- the squashed Gaussian -------------------------------------------------------------------------------------
def test_squashed_log_prob_is_the_change_of_variables() -> None:
    torch.manual_seed(0)
    mean, log_std = torch.randn(64, 3) * 2, torch.randn(64, 3).clamp(-2, 1)
    torch.manual_seed(1)
    action, log_prob = squashed_sample(mean, log_std)
    torch.manual_seed(1)
    u = mean + log_std.exp() * torch.randn_like(mean)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()]
    )
    torch.testing.assert_close(action, torch.tanh(u))
    # log N(u) − Σ log(1 − tanh²u), compared where tanh(u) is not rounded to ±1 (the reference is then inf)
    hand = torch.distributions.Normal(mean, log_std.exp()).log_prob(u) - torch.log1p(-torch.tanh(u).pow(2))
    inside = torch.tanh(u).abs().amax(-1) < 0.999
    torch.testing.assert_close(log_prob[inside], hand.sum(-1)[inside], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(
        log_prob[inside], reference.log_prob(torch.tanh(u)).sum(-1)[inside], rtol=1e-3, atol=1e-3
    )


def test_squashed_log_prob_stays_finite_at_saturation() -> None:
    mean = torch.tensor([[30.0, -30.0]])
    action, log_prob = squashed_sample(mean, torch.full_like(mean, -5.0), deterministic=True)
    assert torch.equal(action, torch.tensor([[1.0, -1.0]]))
    assert torch.isfinite(log_prob).all()


# ----- loss terms by hand ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        # -5 + 3.5·(tanh(x) + 1): smooth, never reaching the bounds
        ("tanh", lambda x: -5.0 + 3.5 * (torch.tanh(x) + 1)),
        # the head's output as it is inside [-20, 2], the bound outside
        ("clamp", lambda x: x.clamp(-20.0, 2.0)),
    ],
)
def test_actor_log_std_modes(mode: str, expected) -> None:
    torch.manual_seed(0)
    actor = SquashedGaussianActor(PENDULUM, (8,), log_std_mode=mode)
    with torch.no_grad():
        actor.log_std.weight.zero_()
        actor.log_std.bias.copy_(torch.tensor([3.0]))  # x = 3 for every observation, then x = -1
        _, high = actor(torch.randn(5, 3))
        actor.log_std.bias.copy_(torch.tensor([-1.0]))
        _, mid = actor(torch.randn(5, 3))
    assert torch.allclose(high, expected(torch.full((5, 1), 3.0)))
    assert torch.allclose(mid, expected(torch.full((5, 1), -1.0)))
    assert high.max() <= 2.0 and (mode != "clamp" or torch.equal(mid, torch.full((5, 1), -1.0)))


def test_sac_builds_its_actor_with_the_log_std_mode() -> None:
    model = SAC(actor_hidden=(8,), critic_hidden=(8,), log_std_mode="clamp", env_spec=PENDULUM.to_dict())
    model.configure_model()
    assert model.actor.log_std_mode == "clamp" and model.hparams.log_std_mode == "clamp"
    assert SAC().hparams.log_std_mode == "tanh"
    with pytest.raises(ConfigError, match=r"^log_std_mode must be one of tanh, clamp, got 'exp'$"):
        SAC(log_std_mode="exp")


def test_soft_q_target_takes_the_min_critic_and_the_entropy_term() -> None:
    next_q = torch.tensor([[1.0, 5.0, -2.0], [2.0, 4.0, -3.0]])  # two critics, three samples
    next_log_prob = torch.tensor([-1.0, 0.5, 0.0])
    reward = torch.tensor([1.0, 0.0, 2.0])
    discount = torch.tensor([0.99, 0.99, 0.0])  # the third transition ended its episode
    alpha = torch.tensor(0.2)
    got = soft_q_target(reward, discount, next_q, next_log_prob, alpha)
    hand = [1.0 + 0.99 * (1.0 - 0.2 * -1.0), 0.0 + 0.99 * (4.0 - 0.2 * 0.5), 2.0]
    torch.testing.assert_close(got, torch.tensor(hand))


def test_critic_loss_sums_each_critics_mse() -> None:
    q = torch.tensor([[1.0, 2.0], [0.0, 4.0]], requires_grad=True)
    target = torch.tensor([2.0, 2.0])
    loss = loss_critic(q, target)
    torch.testing.assert_close(loss, torch.tensor(((1 + 0) / 2) + ((4 + 4) / 2)))
    loss.backward()
    torch.testing.assert_close(q.grad, torch.tensor([[-1.0, 0.0], [-2.0, 2.0]]))  # d/dq of each critic's MSE


def test_actor_loss_uses_the_min_critic() -> None:
    log_prob = torch.tensor([0.5, -1.0])
    q_new = torch.tensor([[3.0, 1.0], [2.0, 4.0]])
    got = loss_actor(torch.tensor(0.1), log_prob, q_new)
    torch.testing.assert_close(got, torch.tensor(((0.05 - 2.0) + (-0.1 - 1.0)) / 2))


def test_temperature_loss_raises_alpha_while_entropy_is_below_target() -> None:
    log_alpha = torch.tensor(0.0, requires_grad=True)
    target_entropy = -1.0
    low_entropy = torch.tensor([2.0, 3.0])  # log π high: entropy −2.5 < −1
    loss = loss_alpha(log_alpha, low_entropy, target_entropy)
    torch.testing.assert_close(loss, torch.tensor(-0.0 * 1.5))
    loss.backward()
    torch.testing.assert_close(log_alpha.grad, torch.tensor(-1.5))  # −mean(log π + H̄): descent raises log α
    log_alpha.grad = None
    loss_alpha(log_alpha, torch.tensor([-3.0]), target_entropy).backward()
    assert log_alpha.grad > 0  # entropy 3 above the target: α decreases


def test_td_target_bootstraps_with_the_items_discount() -> None:
    got = td_target(torch.tensor([1.0, 1.0]), torch.tensor([0.9**3, 0.0]), torch.tensor([10.0, 10.0]))
    torch.testing.assert_close(got, torch.tensor([1.0 + 7.29, 1.0]))


def test_target_smoothing_noise_is_clipped_and_actions_stay_in_range() -> None:
    torch.manual_seed(0)
    action = torch.tensor([[0.0, 0.9, -0.95]]).expand(20_000, 3)
    smoothed = smoothed_target_action(action, noise_std=0.2, noise_clip=0.5)
    noise = smoothed[:, 0]  # the first action is 0: what is added is the clipped noise itself
    assert noise.abs().max() <= 0.5 and noise.abs().max() > 0.45
    assert abs(noise.std().item() - 0.2) < 0.02  # σ = 0.2 with clip at 2.5σ: the std barely shrinks
    assert smoothed.max() <= 1.0 and smoothed.min() >= -1.0
    assert (smoothed[:, 1] == 1.0).any() and (smoothed[:, 2] == -1.0).any()
    assert torch.equal(smoothed_target_action(action, 0.0, 0.5), action)  # DDPG: no smoothing


# ----- networks ----------------------------------------------------------------------------------------------------
def test_ensemble_linear_is_independent_linear_layers() -> None:
    torch.manual_seed(0)
    layer = EnsembleLinear(3, 5, 4)
    x = torch.randn(3, 7, 5)
    out = layer(x)
    for i in range(3):
        torch.testing.assert_close(out[i], x[i] @ layer.weight[i] + layer.bias[i])
    assert not torch.allclose(layer.weight[0], layer.weight[1])  # members initialised independently


def test_critics_with_detached_weights_pass_gradients_only_to_the_action() -> None:
    critic = CriticEnsemble(PENDULUM, size=2, hidden=(8,))
    obs, action = torch.randn(4, 3), torch.zeros(4, 1, requires_grad=True)
    critic(obs, action, detach_params=True).sum().backward()
    assert action.grad is not None and action.grad.abs().sum() > 0
    assert all(p.grad is None for p in critic.parameters())
    q = critic(obs, action)
    assert q.shape == (2, 4)


def test_action_scale_maps_the_box() -> None:
    spec = EnvSpec((2,), torch.float32, False, action_dim=2, action_low=(-2.0, 0.0), action_high=(2.0, 1.0))
    scale = ActionScale(spec)
    torch.testing.assert_close(scale.to_env(torch.tensor([[-1.0, 1.0]])), torch.tensor([[-2.0, 1.0]]))
    torch.testing.assert_close(scale.to_normalized(torch.tensor([[1.0, 0.5]])), torch.tensor([[0.5, 0.0]]))
    unbounded = EnvSpec(
        (2,), torch.float32, False, action_dim=1, action_low=(-math.inf,), action_high=(math.inf,)
    )
    with pytest.raises(ConfigError, match="RescaleAction"):
        ActionScale(unbounded)


def test_ddpg_is_td3_with_one_critic_and_no_delay_or_smoothing() -> None:
    ddpg = DDPG(env_spec=PENDULUM.to_dict())
    ddpg.configure_model()
    assert ddpg.critic.size == 1
    assert ddpg.hparams.policy_delay == 1 and ddpg.hparams.target_policy_noise == 0
    td3 = TD3(env_spec=PENDULUM.to_dict())
    td3.configure_model()
    assert td3.critic.size == 2 and td3.hparams.policy_delay == 2


@pytest.mark.parametrize("algo", [SAC, TD3, DDPG])
def test_time_limits_bootstrap_unless_told_otherwise(algo: type) -> None:
    """The option reaches the data side through the declared needs (the writer honours it: tests/replay)."""
    assert algo().experience_needs().bootstrap_truncated is True
    assert algo(bootstrap_truncated=False).experience_needs().bootstrap_truncated is False


def test_policies_act_within_the_box() -> None:
    for algo in (SAC, TD3):
        model = algo(env_spec=PENDULUM.to_dict(), random_steps=10)
        model.configure_model()
        obs = torch.randn(256, 3)
        for env_steps in (0, 100):  # random warm-up, then the policy
            model.set_env_steps(env_steps, 1000)
            a = model.act(obs)["action"]
            assert a.shape == (256, 1) and a.abs().max() <= 2.0
        assert model.policy(obs).shape == (256, 1)
        assert torch.equal(model.policy(obs), model.policy(obs))  # deterministic evaluation


@pytest.mark.parametrize("bad", [{"tau": 0.0}, {"num_critics": 0}, {"gamma": 1.5}, {"random_steps": -1}])
def test_bad_arguments_fail_in_one_line(bad: dict) -> None:
    for algo in (SAC, TD3):
        with pytest.raises(ConfigError) as err:
            algo(**bad)
        assert "\n" not in str(err.value)


# ----- through the experience source ----------------------------------------------------------------------------
def fit(model: L.LightningModule, budget: int, callbacks: list | None = None, **data) -> ExperienceDataModule:
    L.seed_everything(0, verbose=False)
    settings = {"num_envs": 2, "batch_size": 32, "replay_ratio": 32.0, "learning_starts": 64, "seed": 0}
    dm = ExperienceDataModule("Pendulum-v1", total_env_steps=budget, **{**settings, **data})
    trainer = L.Trainer(**trainer_kwargs(), max_epochs=-1, callbacks=callbacks or [])
    trainer.fit(model, datamodule=dm)
    return dm


def test_continuous_algorithms_refuse_discrete_envs_in_one_line() -> None:
    dm = ExperienceDataModule("CartPole-v1", num_envs=1, total_env_steps=100, batch_size=8, learning_starts=8)
    trainer = L.Trainer(**trainer_kwargs(), max_epochs=-1)
    with pytest.raises(ConfigError, match=r"SAC needs a continuous \(Box\) action space.*Discrete\(2\)"):
        trainer.fit(SAC(), datamodule=dm)


class Changes(L.Callback):
    """Which parameter sets changed at each update."""

    def __init__(self, names: tuple[str, ...]) -> None:
        self.names, self.before, self.changed = names, {}, []

    def flat(self, module: nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:  # noqa: ANN001
        self.before = {n: self.flat(getattr(pl_module, n)) for n in self.names}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001
        after = {n: self.flat(getattr(pl_module, n)) for n in self.names}
        self.changed.append({n for n in self.names if not torch.equal(self.before[n], after[n])})


def test_td3_updates_the_actor_and_targets_every_policy_delay_updates() -> None:
    model = TD3(policy_delay=3, actor_hidden=(16,), critic_hidden=(16,))
    changes = Changes(("actor", "critic", "actor_target", "critic_target"))
    fit(model, budget=120, callbacks=[changes], replay_ratio=16.0)
    assert len(changes.changed) == model.updates >= 9
    for i, changed in enumerate(changes.changed, start=1):
        delayed = {"actor", "actor_target", "critic_target"}
        assert changed == ({"critic"} | delayed if i % 3 == 0 else {"critic"}), (i, changed)
    assert_constant_leaves(model.actor_target, model.critic_target)


def assert_constant_leaves(*targets: nn.Module) -> None:
    """Polyak averaging runs outside autograd: the target networks stay leaves that need no gradient (an
    in-place average under autograd would chain one graph node per update onto every target parameter)."""
    for target in targets:
        assert all(p.is_leaf and not p.requires_grad and p.grad_fn is None for p in target.parameters())


def test_sac_steps_actor_critics_and_temperature_every_update() -> None:
    model = SAC(actor_hidden=(16,), critic_hidden=(16,))
    changes = Changes(("actor", "critic", "critic_target"))
    alphas = []

    class Alpha(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:  # noqa: ANN001
            alphas.append(pl_module.log_alpha.item())

    fit(model, budget=120, callbacks=[changes, Alpha()], replay_ratio=16.0)
    assert len(changes.changed) >= 9
    assert all(c == {"actor", "critic", "critic_target"} for c in changes.changed)
    assert_constant_leaves(model.critic_target)
    assert len(set(alphas)) == len(alphas)  # the temperature moves every update
    fixed = SAC(entropy_coef=0.1, actor_hidden=(16,), critic_hidden=(16,))
    fit(fixed, budget=100, replay_ratio=16.0)
    assert fixed.log_alpha.item() == pytest.approx(math.log(0.1))


def test_sac_actor_reads_the_critics_after_their_step() -> None:
    """The critics step first; the actor's loss then sees the critics' new weights (the SAC paper's order)."""
    model = SAC(actor_hidden=(16,), critic_hidden=(16,))
    seen: list[torch.Tensor] = []
    after: list[torch.Tensor] = []

    def flat(module: nn.Module) -> torch.Tensor:
        return torch.cat([p.detach().flatten() for p in module.parameters()]).clone()

    class Record(L.Callback):
        def on_fit_start(self, trainer, pl_module) -> None:  # noqa: ANN001
            def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
                if kwargs.get("detach_params"):  # the actor's loss
                    seen.append(flat(module))

            pl_module.critic.register_forward_pre_hook(hook, with_kwargs=True)

        def on_train_batch_end(self, trainer, pl_module, *args) -> None:  # noqa: ANN001
            after.append(flat(pl_module.critic))

    fit(model, budget=100, callbacks=[Record()], replay_ratio=16.0)
    assert len(seen) == len(after) == model.updates >= 5
    assert all(torch.equal(s, a) for s, a in zip(seen, after))


def test_updates_per_batch_runs_the_updates_of_a_batch_in_turn() -> None:
    """K = 3 updates per training batch with the actor every 3rd update: every batch moves the critics, and the
    actor and both targets once (the delay counts updates, not batches)."""
    model = TD3(policy_delay=3, updates_per_batch=3, actor_hidden=(16,), critic_hidden=(16,))
    changes = Changes(("actor", "critic", "actor_target", "critic_target"))
    dm = fit(model, budget=120, callbacks=[changes], replay_ratio=16.0)
    assert model.updates == 3 * len(changes.changed) == dm.updates_done and len(changes.changed) >= 3
    assert all(c == {"actor", "critic", "actor_target", "critic_target"} for c in changes.changed)


@pytest.mark.parametrize("algo", [SAC, TD3], ids=["sac", "td3"])
def test_anneal_lr_decays_every_learning_rate_linearly_over_the_budget(algo: type) -> None:
    """``anneal_lr``: each update's learning rates are the configured ones times ``1 − progress`` (the env-step
    count pushed by the source), the temperature's included; without it they stay as configured."""
    lrs = {"actor_lr": 1e-3, "critic_lr": 2e-3} | ({"alpha_lr": 3e-3} if algo is SAC else {})
    seen: list[tuple[float, list[float]]] = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:  # noqa: ANN001
            groups = [g for opt in trainer.optimizers for g in opt.param_groups]
            seen.append((pl_module.progress, [g["lr"] for g in groups]))

    # SAC: [actor, temperature] in the actor's optimizer, then the critics'; TD3: actor's, critics'
    bases = [1e-3, 3e-3, 2e-3] if algo is SAC else [1e-3, 2e-3]
    for anneal in (True, False):
        seen.clear()
        model = algo(anneal_lr=anneal, **lrs, actor_hidden=(16,), critic_hidden=(16,))
        fit(model, budget=200, callbacks=[Record()], replay_ratio=16.0)
        assert len(seen) >= 50 and seen[0][0] < 0.5 and seen[-1][0] > 0.9
        for progress, lr in seen:
            expected = [b * (1.0 - progress) if anneal else b for b in bases]
            assert lr == pytest.approx(expected, rel=1e-6, abs=1e-12), (progress, lr)


@pytest.mark.parametrize("algo", [SAC, TD3], ids=["sac", "td3"])
def test_async_samplers_feed_the_continuous_algorithms(algo: type) -> None:
    """Served replay tables too: 2 updates per training batch, sampled from the table server in one call."""
    model = algo(actor_hidden=(16,), critic_hidden=(16,), random_steps=50, updates_per_batch=2)
    dm = fit(model, budget=1200, sampler="async", num_sampler_procs=2, replay_ratio=8.0)
    assert dm.env_steps >= 1200 and model.updates > 100 and model.updates == dm.updates_done
    # 2 processes x 2 envs, 200-step episodes: however unevenly the processes share the 1,200 steps (a loaded
    # machine can starve one), x + y >= 1,200 steps of two envs each end 2·(⌊x/400⌋ + ⌊y/400⌋) >= 4 episodes
    assert len(dm.tracker.recent_returns) >= 4


USER_NETWORKS = {  # tests/user_networks.py: a LayerNorm critic and a clamped-log-std actor, as users write them
    "actor_network": {"class_path": "user_networks.GaussianActor", "init_args": {"hidden": 64}},
    "critic_network": {"class_path": "user_networks.LayerNormCritic", "init_args": {"hidden": 64}},
}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("algo", "networks"),
    [(SAC, {}), (TD3, {}), (SAC, USER_NETWORKS)],
    ids=["sac", "td3", "sac-user-networks"],
)
def test_learns_pendulum(algo: type, networks: dict) -> None:
    """6k env steps at one update of 128 per env step: far above a random policy's ~ −1,200 return."""
    import user_networks  # noqa: F401 - the class paths name loaded classes

    from lightning_accelrl.envs import make_env
    from lightning_accelrl.evaluation import evaluate_policy

    torch.set_num_threads(1)
    model = algo(actor_lr=1e-3, critic_lr=1e-3, actor_hidden=(64, 64), critic_hidden=(64, 64), **networks)
    fit(model, budget=6000, num_envs=1, batch_size=128, replay_ratio=128.0, learning_starts=128)
    with make_env("Pendulum-v1", num_envs=5, seed=123) as env:
        result = evaluate_policy(model, env, episodes=5)
    assert result["return_mean"] > -400, result["returns"]


# ----- recipes ---------------------------------------------------------------------------------------------------
CONTINUOUS_RECIPES = {
    "sac-pendulum": "Pendulum-v1",
    "td3-pendulum": "Pendulum-v1",
    **{
        f"{a}-{name.lower()}": f"{name}-v5"
        for a in ("sac", "td3")
        for name in ("HalfCheetah", "Hopper", "Walker2d")
    },
}

UPDATES_PER_ENV_STEP = {"sac-pendulum": 0.25}


@pytest.mark.parametrize("recipe", sorted(CONTINUOUS_RECIPES))
def test_recipes_build_their_algorithm_for_their_env(recipe: str) -> None:
    import gymnasium as gym
    import yaml

    from lightning_accelrl.cli import recipe_path
    from lightning_accelrl.trusted import resolve_class

    config = yaml.safe_load(recipe_path(recipe).read_text())
    assert config["data"]["env"] == CONTINUOUS_RECIPES[recipe]
    cls = resolve_class(config["model"]["class_path"], L.LightningModule, "model")
    assert cls is {"sac": SAC, "td3": TD3}[recipe.split("-")[0]]
    model = cls(**config["model"]["init_args"])
    assert model.experience_needs().actions == "continuous"
    gym.spec(config["data"]["env"])  # registered (the MuJoCo ones by gymnasium itself)
    # the replay ratio is the update-to-data ratio times the batch size: one update of batch_size per env step,
    # or, in sac-pendulum, one update of 1024 every 4 env steps
    data = config["data"]
    assert data["replay_ratio"] / data["batch_size"] == UPDATES_PER_ENV_STEP.get(recipe, 1.0)
    if recipe.endswith("-pendulum"):  # the promise is read on 100 greedy episodes (std ~95: 10 are too few)
        assert config["summary"]["eval_episodes"] == 100


@pytest.mark.parametrize("recipe", ["td3-pendulum", "sac-halfcheetah"])
def test_recipes_run_through_the_cli(recipe: str, tmp_path) -> None:
    import json
    import subprocess
    import sys

    if "halfcheetah" in recipe:
        pytest.importorskip("mujoco")
    cmd = [
        sys.executable, "-m", "lightning_accelrl.cli", "fit", "--recipe", recipe, "--data.total_env_steps", "400",
        "--data.learning_starts", "256", "--model.init_args.random_steps", "100", "--summary.eval_episodes", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(tmp_path.glob("**/summary.json")).read_text())
    assert summary["env_steps"] == 400 and summary["updates"] > 100
    assert summary["eval_episodes"] == 1 and math.isfinite(summary["eval_return_mean"])
