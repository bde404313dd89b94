"""Bring your own network: an ``nn.Module`` or a class path with ``init_args``, trained, checkpointed, reloaded
(``load_from_checkpoint``, ``accelrl evaluate``) and evaluated; checkpoints hold plain data and import nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
from foundation_helpers import trainer_kwargs
from lightning.pytorch.callbacks import ModelCheckpoint
from user_networks import (
    GaussianActor,
    LayerNormCritic,
    RecordedActorCritic,
    RecordedLayerNormCritic,
    TanhActor,
    TinyActorCritic,
    TinyQ,
)

from lightning_accelrl import DDPG, DQN, PPO, SAC, TD3, CategoricalDQN, ExperienceDataModule
from lightning_accelrl.envs import make_env, probe_spec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.evaluation import evaluate_policy

TESTS = Path(__file__).parent
CARTPOLE = probe_spec("CartPole-v1")
PENDULUM = probe_spec("Pendulum-v1")
TINY = {"class_path": "user_networks.TinyActorCritic", "init_args": {"hidden": 32}}


def fit_with_checkpoint(model: L.LightningModule, tmp_path: Path, env: str = "CartPole-v1", **data) -> Path:
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(env, **data)
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    trainer = L.Trainer(**trainer_kwargs(max_epochs=-1, enable_checkpointing=True, callbacks=[ckpt]))
    trainer.fit(model, datamodule=dm)
    return tmp_path / "last.ckpt"


def ppo_fit(network, tmp_path: Path, steps: int = 2_048) -> tuple[PPO, Path]:
    model = PPO(network=network, lr=1e-3, update_epochs=4, minibatch_size=128)
    path = fit_with_checkpoint(
        model, tmp_path, num_envs=4, rollout_steps=64, total_env_steps=steps, updates_per_epoch=4
    )
    return model, path


def same_outputs(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    obs = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    return all(torch.equal(x, y) for x, y in zip(a(obs), b(obs), strict=True))


def test_class_path_network_trains_checkpoints_reloads_and_evaluates(tmp_path: Path) -> None:
    model, path = ppo_fit(TINY, tmp_path, steps=12_288)
    assert isinstance(model.net, TinyActorCritic) and model.net.trunk[0].out_features == 32
    raw = torch.load(path, weights_only=True)  # plain data only: no module pickled into the checkpoint
    assert raw["hyper_parameters"]["network"] == TINY
    loaded = PPO.load_from_checkpoint(path)
    assert isinstance(loaded.net, TinyActorCritic) and same_outputs(loaded.net, model.net)
    with make_env("CartPole-v1", 4, seed=99) as env:
        result = evaluate_policy(loaded, env, 8)
    assert result["return_mean"] > 100  # learned (random play: ~22)


def test_module_instance_must_be_given_again_unless_it_records_its_arguments(tmp_path: Path) -> None:
    model, path = ppo_fit(TinyActorCritic(CARTPOLE, hidden=8), tmp_path / "plain")
    stored = torch.load(path, weights_only=True)["hyper_parameters"]["network"]
    assert stored == {"class_path": "user_networks.TinyActorCritic", "given_as_object": True}
    with pytest.raises(ConfigError, match="given as an object.*pass network=") as err:
        PPO.load_from_checkpoint(path)
    assert "\n" not in str(err.value)
    loaded = PPO.load_from_checkpoint(path, network=TinyActorCritic(CARTPOLE, hidden=8))
    assert same_outputs(loaded.net, model.net)

    model, path = ppo_fit(RecordedActorCritic(CARTPOLE, hidden=8), tmp_path / "recorded")
    loaded = PPO.load_from_checkpoint(path)  # rebuilt from its class path and recorded init_args
    assert isinstance(loaded.net, RecordedActorCritic) and same_outputs(loaded.net, model.net)


def test_q_networks_from_class_paths(tmp_path: Path) -> None:
    common = {
        "num_envs": 4,
        "total_env_steps": 600,
        "learning_starts": 200,
        "batch_size": 32,
        "replay_ratio": 1.0,
    }
    dqn = DQN(network={"class_path": "user_networks.TinyQ", "init_args": {"hidden": 16}})
    path = fit_with_checkpoint(dqn, tmp_path / "dqn", **common)
    assert isinstance(dqn.q, TinyQ) and isinstance(dqn.q_target, TinyQ) and dqn.updates > 0
    assert torch.equal(DQN.load_from_checkpoint(path).q(torch.ones(2, 4)), dqn.q(torch.ones(2, 4)))
    c51 = CategoricalDQN(num_atoms=11, network={"class_path": "user_networks.TinyQ"})  # gets num_atoms=11
    fit_with_checkpoint(c51, tmp_path / "c51", **common)
    assert c51.q(torch.ones(2, 4)).shape == (2, 2, 11) and c51.q_values(torch.ones(2, 4)).shape == (2, 2)
    dqn = DQN(network=TinyQ(CARTPOLE, hidden=8))  # an instance: the target network is its copy
    fit_with_checkpoint(dqn, tmp_path / "instance", **common)
    assert dqn.q_target is not dqn.q and isinstance(dqn.q_target, TinyQ)


def test_class_paths_are_never_imported() -> None:
    model = PPO(network={"class_path": "user_nets_never_imported.Net"}, env_spec=CARTPOLE.to_dict())
    with pytest.raises(ConfigError, match="not loaded: import its module first"):
        model.configure_model()
    assert "user_nets_never_imported" not in sys.modules
    with pytest.raises(ConfigError, match="not a Module subclass"):
        PPO(
            network={"class_path": "lightning_accelrl.errors.ConfigError"}, env_spec=CARTPOLE.to_dict()
        ).configure_model()
    with pytest.raises(ConfigError, match="network must be a name"):
        PPO(network=3)
    with pytest.raises(ConfigError, match="unknown network 'resnet'"):
        PPO(network="resnet", env_spec=CARTPOLE.to_dict()).configure_model()


def run_cli(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_cli_fit_with_a_class_path_network_then_evaluate(tmp_path: Path) -> None:
    """``accelrl fit --model.network '{"class_path": ...}'`` (jsonargparse takes the dict), then ``accelrl evaluate
    --import`` with the module that defines the network."""
    args = [
        "fit", "--recipe", "ppo-cartpole", "--model.init_args.network", json.dumps(TINY),
        "--data.total_env_steps", "1024", "--data.updates_per_epoch", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    # the user's own config names the class: `accelrl fit` imports its module (configs are trusted, files are not)
    proc = run_cli(f"import sys\nfrom lightning_accelrl.cli import main\nsys.exit(main({args!r}))", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = next(tmp_path.rglob("last.ckpt"))
    assert torch.load(ckpt, weights_only=True)["hyper_parameters"]["network"] == TINY
    evaluate = ["evaluate", "--ckpt", str(ckpt), "--episodes", "2"]
    code = (
        "import sys\nfrom lightning_accelrl.cli import main\n"
        f"assert main({evaluate!r}) == 2\n"  # the checkpoint imports nothing: the network's module is not loaded
        f"sys.exit(main({[*evaluate, '--import', 'user_networks']!r}))\n"
    )
    proc = run_cli(code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--import user_networks" in proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1])["episodes"] == 2


def test_fit_configs_may_import_the_network_module() -> None:
    """For configs the user wrote (``accelrl fit``), the class path's module is imported; a missing one is one line."""
    from lightning_accelrl.nets.factory import import_network_module

    import_network_module(TINY)
    import_network_module("auto")  # built-in names: nothing to import
    with pytest.raises(ConfigError, match="cannot import module 'no_such_nets'"):
        import_network_module({"class_path": "no_such_nets.Net"})


def test_a_network_of_the_wrong_family_fails_in_one_line() -> None:
    spec = CARTPOLE.to_dict()
    with pytest.raises(
        ConfigError, match=r"TinyQ returns shapes \(\(2, 2\),\).*needs \(\(2, 2\), \(2, 1\)\)"
    ):
        PPO(network={"class_path": "user_networks.TinyQ"}, env_spec=spec).configure_model()
    with pytest.raises(ConfigError, match="CategoricalDQN needs \\(\\(2, 2, 51\\),\\)"):
        CategoricalDQN(network=TinyQ(CARTPOLE), env_spec=spec).configure_model()
    with pytest.raises(ConfigError, match="DQN needs"):
        DQN(network=TinyActorCritic(CARTPOLE), env_spec=spec).configure_model()


def test_a_subclass_passing_the_network_through_kwargs_stores_plain_data() -> None:
    class MyPPO(PPO):
        def __init__(self, **kw) -> None:
            super().__init__(**kw)

    model = MyPPO(network=TinyActorCritic(CARTPOLE), lr=1e-3)
    assert model.hparams.network == {"class_path": "user_networks.TinyActorCritic", "given_as_object": True}
    assert model.hparams.lr == 1e-3 and isinstance(model.net, TinyActorCritic)
    c51 = CategoricalDQN(network=TinyQ(CARTPOLE, num_atoms=51))
    assert c51.hparams.network == {"class_path": "user_networks.TinyQ", "given_as_object": True}


# ----- SAC, TD3, DDPG: actor_network and critic_network --------------------------------------------------------
PENDULUM_REPLAY = {
    "num_envs": 2,
    "total_env_steps": 400,
    "learning_starts": 64,
    "batch_size": 32,
    "replay_ratio": 8.0,
}
GAUSSIAN = {"class_path": "user_networks.GaussianActor", "init_args": {"hidden": 16}}
LAYERNORM = {"class_path": "user_networks.LayerNormCritic", "init_args": {"hidden": 16}}


def params_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_sac_with_user_actor_and_critics_trains_checkpoints_and_reloads(tmp_path: Path) -> None:
    model = SAC(actor_network=GAUSSIAN, critic_network=LAYERNORM, random_steps=32)
    path = fit_with_checkpoint(model, tmp_path, env="Pendulum-v1", **PENDULUM_REPLAY)
    assert isinstance(model.actor, GaussianActor) and model.updates > 0
    first, second = model.critic.members  # two critics, each built afresh: different weights
    assert isinstance(first, LayerNormCritic) and not params_equal(first, second)
    assert not params_equal(model.critic, model.critic_target)  # the target follows by Polyak steps
    stored = torch.load(path, weights_only=True)["hyper_parameters"]  # plain data: nothing pickled
    assert (stored["actor_network"], stored["critic_network"]) == (GAUSSIAN, LAYERNORM)
    loaded = SAC.load_from_checkpoint(path)
    obs, action = torch.randn(5, 3), torch.rand(5, 1) * 2 - 1
    assert all(torch.equal(x, y) for x, y in zip(loaded.actor(obs), model.actor(obs), strict=True))
    assert torch.equal(loaded.critic(obs, action), model.critic(obs, action))
    assert loaded.critic(obs, action).shape == (2, 5)


def test_user_critics_with_detached_weights_pass_gradients_only_to_the_action() -> None:
    """SAC's and TD3's actor losses read the critics this way: no gradient may reach the critics' weights."""
    model = SAC(critic_network=LAYERNORM, env_spec=PENDULUM.to_dict())
    model.configure_model()
    action = torch.zeros(4, 1, requires_grad=True)
    model.critic(torch.randn(4, 3), action, detach_params=True).sum().backward()
    assert action.grad is not None and action.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.critic.parameters())


def test_td3_and_ddpg_take_network_instances(tmp_path: Path) -> None:
    td3 = TD3(
        actor_network=TanhActor(PENDULUM, hidden=16), critic_network=RecordedLayerNormCritic(PENDULUM, 16)
    )
    fit_with_checkpoint(td3, tmp_path / "td3", env="Pendulum-v1", **PENDULUM_REPLAY)
    given, built = td3.critic.members  # the instance given, and a second built from its recorded init_args
    assert isinstance(built, RecordedLayerNormCritic) and not params_equal(given, built)
    assert isinstance(td3.actor_target, TanhActor) and td3.actor_target is not td3.actor
    ddpg = DDPG(actor_network=TanhActor(PENDULUM), critic_network=LayerNormCritic(PENDULUM))  # one critic
    path = fit_with_checkpoint(ddpg, tmp_path / "ddpg", env="Pendulum-v1", **PENDULUM_REPLAY)
    assert len(ddpg.critic.members) == 1 and ddpg.updates > 0
    with pytest.raises(ConfigError, match="given as an object.*pass critic_network=") as err:
        DDPG.load_from_checkpoint(
            path
        )  # never rebuilt with default arguments: they may not be the instance's
    assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="given as an object.*pass actor_network="):
        DDPG.load_from_checkpoint(path, critic_network=LayerNormCritic(PENDULUM))
    loaded = DDPG.load_from_checkpoint(
        path, actor_network=TanhActor(PENDULUM), critic_network=LayerNormCritic(PENDULUM)
    )
    assert params_equal(loaded.actor, ddpg.actor) and params_equal(loaded.critic, ddpg.critic)


def test_user_continuous_networks_fail_in_one_line() -> None:
    spec = PENDULUM.to_dict()
    cases = [
        (
            TD3(critic_network=LayerNormCritic(PENDULUM), env_spec=spec),
            "TD3 builds 2 critics.*records no init_args",
        ),
        (SAC(actor_network=TanhActor(PENDULUM), env_spec=spec), r"SAC's actor \(mean, log_std\) needs"),
        (TD3(actor_network=GaussianActor(PENDULUM), env_spec=spec), r"TD3's actor needs \(\(2, 1\),\)"),
        (
            SAC(critic_network={"class_path": "user_networks.TanhActor"}, env_spec=spec),
            "SAC's critic calls it as",
        ),
        (
            SAC(critic_network={"class_path": "user_networks.GaussianActor"}, env_spec=spec),
            "SAC's critic calls",
        ),
        (DDPG(critic_network=TanhActor(PENDULUM), env_spec=spec), r"forward\(obs, action\).*TypeError"),
        (
            SAC(actor_network={"class_path": "user_nets_never_imported.A"}, env_spec=spec),
            "actor_network.*not loaded",
        ),
    ]
    for model, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            model.configure_model()
        assert "\n" not in str(err.value)
    with pytest.raises(ConfigError, match="unknown actor_network 'cnn'; give 'mlp'"):
        SAC(actor_network="cnn")
    with pytest.raises(ConfigError, match="critic_network must be a name \\(mlp\\)"):
        TD3(critic_network=3)


def test_cli_fit_sac_with_user_networks_then_evaluate(tmp_path: Path) -> None:
    """The config names both classes: `accelrl fit` imports their module; `evaluate --import` reloads them."""
    args = [
        "fit", "--recipe", "sac-pendulum", "--model.init_args.actor_network", json.dumps(GAUSSIAN),
        "--model.init_args.critic_network", json.dumps(LAYERNORM), "--data.total_env_steps", "300",
        "--data.learning_starts", "100", "--data.batch_size", "64", "--data.replay_ratio", "16",
        "--summary.eval_episodes", "1", "--trainer.enable_progress_bar", "false",
        "--trainer.enable_model_summary", "false",
    ]  # fmt: skip
    proc = run_cli(f"import sys\nfrom lightning_accelrl.cli import main\nsys.exit(main({args!r}))", tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = next(tmp_path.rglob("last.ckpt"))
    evaluate = ["evaluate", "--ckpt", str(ckpt), "--episodes", "1", "--import", "user_networks"]
    proc = run_cli(
        f"import sys\nfrom lightning_accelrl.cli import main\nsys.exit(main({evaluate!r}))", tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["episodes"] == 1


def test_the_shape_probe_leaves_batchnorm_statistics_and_the_mode_alone() -> None:
    """The library checks a user network's output shapes with one forward: in eval mode, then back to train."""

    class NormedActor(TanhActor):
        def __init__(self, spec, hidden: int = 16) -> None:
            super().__init__(spec, hidden)
            self.norm = torch.nn.BatchNorm1d(3)

        def forward(self, obs: torch.Tensor) -> torch.Tensor:
            return super().forward(self.norm(obs))

    model = TD3(actor_network=NormedActor(PENDULUM), env_spec=PENDULUM.to_dict())
    model.configure_model()
    assert int(model.actor.norm.num_batches_tracked) == 0 and model.actor.training
    assert torch.equal(model.actor.norm.running_mean, torch.zeros(3))
