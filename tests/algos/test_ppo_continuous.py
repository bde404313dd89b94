"""PPO on continuous actions: running observation statistics (exact, checkpointed, applied when acting and
evaluating, shipped to sampler processes), reward scaling by the return's std, state-dependent log-std, the
stored action, and learning Pendulum."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from foundation_helpers import trainer_kwargs
from process_helpers import run_in_own_group, shm_segments
from tensordict import TensorDict

from lightning_accelrl import A2C, PPO, ExperienceDataModule
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.evaluation import evaluate_policy
from lightning_accelrl.nets.actor_critic import LOG_STD_MAX, LOG_STD_MIN, ActorCriticMLP
from lightning_accelrl.nets.normalization import RunningMeanStd

PENDULUM = EnvSpec((3,), torch.float32, discrete=False, action_dim=1, action_low=(-2.0,), action_high=(2.0,))
BOX2 = EnvSpec(
    (4,), torch.float32, discrete=False, action_dim=2, action_low=(-1.0,) * 2, action_high=(1.0,) * 2
)


# ----- running statistics ------------------------------------------------------------------------------------
def test_running_statistics_equal_numpy_over_the_concatenated_batches() -> None:
    g = np.random.default_rng(0)
    rms = RunningMeanStd((3,))
    seen = []
    for k, n in enumerate([5, 1, 64, 17]):
        x = g.normal(loc=[k, -3.0 * k, 100.0], scale=[1.0, 0.1 + k, 5.0], size=(n, 3))
        seen.append(x)
        rms.update(torch.from_numpy(x).float().reshape(n, 1, 3) if n > 1 else torch.from_numpy(x).float())
        all_x = np.concatenate(seen).astype(np.float32).astype(np.float64)
        np.testing.assert_allclose(rms.mean.numpy(), all_x.mean(0), rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(rms.var.numpy(), all_x.var(0), rtol=1e-5)
        assert float(rms.count) == len(all_x)
    assert rms.mean.dtype == rms.var.dtype == torch.float32 and rms.count.dtype == torch.float64


def test_normalize_before_any_update_only_clips_and_after_centres_and_clips() -> None:
    rms = RunningMeanStd((2,))
    x = torch.tensor([[0.5, -30.0]])
    assert torch.equal(rms.normalize(x), torch.tensor([[0.5, -10.0]]))
    rms.update(torch.tensor([[1.0, 0.0], [3.0, 0.0], [5.0, 0.0]]))  # mean (3, 0), var (8/3, 0)
    out = rms.normalize(torch.tensor([[5.0, 1.0]]))
    torch.testing.assert_close(out[0, 0], torch.tensor(2.0 / (8 / 3 + 1e-8) ** 0.5))
    assert float(out[0, 1]) == 10.0  # 1 / sqrt(0 + 1e-8) = 1e4, clipped
    assert float(rms.scale(torch.tensor([-1e9, 1.0]))[0]) == -10.0


def test_ranks_fold_in_each_others_samples() -> None:
    """Two ranks (threads) pass their own samples and a summing reduction: both end with the statistics of
    all samples, as under DDP with ``strategy.reduce(..., 'sum')``."""
    barrier, slots = threading.Barrier(2), [None, None]

    def all_sum(rank: int):
        def reduce(x: torch.Tensor) -> torch.Tensor:
            slots[rank] = x.clone()
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()
            return total

        return reduce

    g = torch.Generator().manual_seed(0)
    data = [[torch.randn(n, 2, generator=g) * (1 + r) + r for n in (7, 30)] for r in range(2)]
    stats = [RunningMeanStd((2,)), RunningMeanStd((2,))]

    def rank_main(r: int) -> None:
        for x in data[r]:
            stats[r].update(x, all_sum(r))

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    everything = torch.cat([x for rank in data for x in rank]).double()
    for rms in stats:
        torch.testing.assert_close(rms.mean.double(), everything.mean(0), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(rms.var.double(), everything.var(0, unbiased=False), rtol=1e-5, atol=1e-6)
        assert float(rms.count) == 74
    assert torch.equal(stats[0].mean, stats[1].mean) and torch.equal(stats[0].var, stats[1].var)


# ----- observation normalization in PPO: updated after the update, checkpointed, applied by policy ------------
class Rollouts(L.Callback):
    """Each batch's observations, and the observation statistics before and after each update."""

    def __init__(self) -> None:
        self.observations: list[torch.Tensor] = []
        self.before: list[torch.Tensor] = []
        self.after: list[torch.Tensor] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.observations.append(batch["observation"].clone())
        self.before.append(pl_module.obs_rms.mean.clone())

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after.append(pl_module.obs_rms.mean.clone())


def test_observation_statistics_follow_the_rollouts_and_survive_a_checkpoint(tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    seen = Rollouts()
    model = PPO(normalize_observations=True, update_epochs=1, minibatch_size=32, hidden=(16,))
    dm = ExperienceDataModule("Pendulum-v1", num_envs=2, rollout_steps=16, total_env_steps=4 * 32, seed=0)
    trainer = L.Trainer(**trainer_kwargs(callbacks=[seen]))
    trainer.fit(model, datamodule=dm)

    # the statistics are those of every observation trained on, folded in after each update
    all_obs = torch.cat([o.reshape(-1, 3) for o in seen.observations]).double()
    torch.testing.assert_close(model.obs_rms.mean.double(), all_obs.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        model.obs_rms.var.double(), all_obs.var(0, unbiased=False), rtol=1e-5, atol=1e-6
    )
    assert float(model.obs_rms.count) == 4 * 32
    assert torch.equal(seen.before[0], torch.zeros(3))  # the first rollout: before any statistics
    for k in range(1, 4):
        assert torch.equal(seen.before[k], seen.after[k - 1])  # collected with the statistics trained with

    ckpt = tmp_path / "ppo.ckpt"
    trainer.save_checkpoint(ckpt)
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    assert torch.equal(state["obs_rms.mean"], model.obs_rms.mean)
    assert torch.equal(state["obs_rms.var"], model.obs_rms.var)

    loaded = PPO.load_from_checkpoint(ckpt)
    assert torch.equal(loaded.obs_rms.mean, model.obs_rms.mean)
    assert torch.equal(loaded.obs_rms.var, model.obs_rms.var)
    assert float(loaded.obs_rms.count) == float(model.obs_rms.count)
    obs = torch.tensor([[1.0, 0.0, 0.5], [-1.0, 0.0, -8.0]])
    normalized = ((obs - model.obs_rms.mean) / (model.obs_rms.var + 1e-8).sqrt()).clamp(-10, 10)
    mean_of_net = loaded.net(normalized)[0][:, :1]
    assert torch.equal(loaded.policy(obs, deterministic=True), mean_of_net)  # evaluation normalizes
    assert not torch.equal(mean_of_net, loaded.net(obs)[0][:, :1])  # (and it matters)
    torch.testing.assert_close(loaded.value(obs), loaded.net.value(normalized))


def test_normalize_observations_refuses_images() -> None:
    spec = EnvSpec((4, 84, 84), torch.uint8, discrete=True, num_actions=6)
    model = PPO(normalize_observations=True, env_spec=spec.to_dict())
    with pytest.raises(ConfigError, match="normalize_observations"):
        model.configure_model()


# ----- reward scaling ----------------------------------------------------------------------------------------
def rollout(reward: list[list[float]], done: list[list[bool]]) -> TensorDict:
    r = torch.tensor(reward).unsqueeze(-1)
    d = torch.tensor(done).unsqueeze(-1)
    return TensorDict({"next": {"reward": r, "done": d}}, batch_size=r.shape[:2])


def test_reward_scaling_matches_a_hand_computation() -> None:
    model = PPO(normalize_rewards=True, env_spec=PENDULUM.to_dict())
    model.configure_model()
    gamma = 0.5
    # env 0 ends an episode at t = 1 (its return restarts), env 1 runs on
    batch = rollout([[1.0, -1.0], [2.0, 0.0], [3.0, 4.0]], [[False, False], [True, False], [False, False]])
    returns = [1.0, 0.5 * 1 + 2, 3.0, -1.0, 0.5 * -1 + 0, 0.5 * -0.5 + 4]  # 1, 2.5, 3 | -1, -0.5, 3.75
    scaled = model.scaled_rewards(batch, gamma)
    std = np.std(returns)
    torch.testing.assert_close(scaled, batch["next", "reward"] / std)
    assert abs(float(model.return_rms.var) - np.var(returns)) < 1e-5
    # the next rollout continues each env's return: 0.5 * 3 + 1 and 0.5 * 3.75 + 1
    batch2 = rollout([[1.0, 1.0]], [[False, True]])
    returns += [2.5, 2.875]
    scaled2 = model.scaled_rewards(batch2, gamma)
    torch.testing.assert_close(scaled2, batch2["next", "reward"] / np.std(returns))
    assert torch.equal(model.running_return.squeeze(-1), torch.tensor([2.5, 0.0], dtype=torch.float64))
    assert float(model.return_rms.count) == 8


def test_reward_scaling_is_off_by_default_and_statistics_are_checkpointed(tmp_path: Path) -> None:
    batch = rollout([[1.0, -1.0]], [[False, False]])
    plain = PPO(env_spec=PENDULUM.to_dict())
    plain.configure_model()
    assert plain.scaled_rewards(batch, 0.9) is batch["next", "reward"]
    L.seed_everything(0, verbose=False)
    model = A2C(normalize_rewards=True, hidden=(16,))
    dm = ExperienceDataModule("Pendulum-v1", num_envs=2, rollout_steps=8, total_env_steps=3 * 16, seed=0)
    trainer = L.Trainer(**trainer_kwargs())
    trainer.fit(model, datamodule=dm)
    assert float(model.return_rms.count) == 3 * 16 and float(model.return_rms.var) > 0
    ckpt = tmp_path / "a2c.ckpt"
    trainer.save_checkpoint(ckpt)
    loaded = A2C.load_from_checkpoint(ckpt)
    assert torch.equal(loaded.return_rms.var, model.return_rms.var)
    assert float(loaded.return_rms.count) == 3 * 16


# ----- log-std options ---------------------------------------------------------------------------------------
def test_state_dependent_log_std_shapes_init_and_clamp() -> None:
    torch.manual_seed(0)
    net = ActorCriticMLP(BOX2, hidden=(8,), log_std="state_dependent", log_std_init=-1.0)
    assert net.log_std is None and net.policy_head[-1].out_features == 4
    params, value = net(torch.zeros(5, 4))
    assert params.shape == (5, 4) and value.shape == (5, 1)
    torch.testing.assert_close(params[:, 2:], torch.full((5, 2), -1.0))  # zero input: the bias alone
    params, _ = net(torch.randn(5, 4))
    assert not torch.equal(params[0, 2:], params[1, 2:])  # the log-std depends on the state
    params.sum().backward()
    assert net.policy_head[-1].weight.grad[2:].abs().sum() > 0  # and is trained through the head
    with torch.no_grad():
        net.policy_head[-1].bias[2:] = torch.tensor([50.0, -50.0])
    params, _ = net(torch.zeros(3, 4))
    assert torch.equal(params[:, 2], torch.full((3,), LOG_STD_MAX))
    assert torch.equal(params[:, 3], torch.full((3,), LOG_STD_MIN))


def test_state_independent_log_std_starts_at_log_std_init() -> None:
    net = ActorCriticMLP(BOX2, hidden=(8,), log_std_init=-0.5)
    assert torch.equal(net.log_std.detach(), torch.full((2,), -0.5))
    params, _ = net(torch.randn(3, 4))
    assert torch.equal(params[:, 2:], torch.full((3, 2), -0.5))


@pytest.mark.parametrize(
    ("kwargs", "spec", "match"),
    [
        ({"log_std": "per_state"}, None, "log_std must be one of"),
        ({"log_std": "state_dependent"}, EnvSpec((4,), torch.float32, True, num_actions=2), "discrete"),
        ({"log_std_init": -1.0}, EnvSpec((4,), torch.float32, True, num_actions=2), "discrete"),
        (
            {"log_std": "state_dependent", "network": {"class_path": "user_networks.TinyActorCritic"}},
            PENDULUM,
            "returns its own log-std",
        ),
    ],
)
def test_log_std_config_errors(kwargs: dict, spec: EnvSpec | None, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        model = PPO(**kwargs, env_spec=None if spec is None else spec.to_dict())
        model.configure_model()


def test_ppo_with_state_dependent_log_std_stores_the_unclipped_sample() -> None:
    """The rollout keeps the Gaussian sample (often beyond Pendulum's ±2 here) and its log-probability; the
    env adapter clips only what it sends to the env."""
    L.seed_everything(0, verbose=False)
    batches = []

    class Keep(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            batches.append(batch.clone())

    model = PPO(
        log_std="state_dependent",
        log_std_init=1.0,
        update_epochs=1,
        minibatch_size=64,
        hidden=(16,),
        env_spec=PENDULUM.to_dict(),
    )
    model.configure_model()
    initial = copy.deepcopy(model)  # the policy that collects the first rollout
    dm = ExperienceDataModule("Pendulum-v1", num_envs=4, rollout_steps=16, total_env_steps=64, seed=0)
    L.Trainer(**trainer_kwargs(callbacks=[Keep()])).fit(model, datamodule=dm)
    batch = batches[0]
    actions = batch["action"]
    assert actions.shape == (16, 4, 1) and actions.abs().max() > 2.0  # std e^1: many samples pass the bound
    with torch.no_grad():
        params, _ = initial(batch["observation"])
        log_prob = initial.dist(params).log_prob(actions)
    torch.testing.assert_close(batch["sample_log_prob"], log_prob)  # the log-prob of the unclipped sample


def test_evaluation_acts_with_the_mean() -> None:
    model = PPO(log_std_init=2.0, env_spec=PENDULUM.to_dict(), hidden=(8,))
    model.configure_model()
    obs = torch.randn(6, 3)
    assert torch.equal(model.policy(obs, deterministic=True), model(obs)[0][:, :1])
    assert not torch.equal(model.policy(obs, deterministic=False), model(obs)[0][:, :1])


# ----- learning ----------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_ppo_learns_pendulum() -> None:
    """The ppo-pendulum recipe's settings on half its budget (the learning rate annealed over it): the greedy
    policy far above the initial one (about -1,200). ~50 s on an idle 2-core machine."""
    recipe = yaml.safe_load(
        (Path(__file__).parents[2] / "lightning_accelrl/recipes/ppo-pendulum.yaml").read_text()
    )
    data = {**recipe["data"], "total_env_steps": 50_000, "seed": 0}
    L.seed_everything(0, verbose=False)
    model = PPO(**recipe["model"]["init_args"])
    dm = ExperienceDataModule(**data)
    L.Trainer(**trainer_kwargs(max_epochs=-1)).fit(model, datamodule=dm)
    env = dm.build_env(rank=0, seed=1_000_003)
    result = evaluate_policy(model, env, 10, deterministic=True)
    env.close()
    assert result["return_mean"] > -450, result["returns"]  # measured: -263


# ----- async samplers act with the shipped statistics --------------------------------------------------------
ASYNC_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import torch
    torch.set_num_threads(1)
    import lightning as L
    from lightning_accelrl import APPO, ExperienceDataModule

    class ReportingAPPO(APPO):
        # the rollout records the observation statistics each sampler acted with
        def act(self, observation):
            out = super().act(observation)
            n = observation.shape[0]
            out["acting_mean"] = self.obs_rms.mean.expand(n, -1).clone()
            out["acting_var"] = self.obs_rms.var.expand(n, -1).clone()
            return out

    class Record(L.Callback):
        def __init__(self):
            self.learner, self.used = {}, []

        def on_train_start(self, trainer, pl_module):
            self.learner[pl_module.policy_version] = [pl_module.obs_rms.mean.tolist(), pl_module.obs_rms.var.tolist()]

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            versions = batch["policy_version"].unique().tolist()
            assert len(versions) == 1, versions  # a segment is collected with one version of the weights
            self.used.append([versions[0], batch["acting_mean"][0, 0].tolist(), batch["acting_var"][0, 0].tolist()])
            assert (batch["acting_mean"] == batch["acting_mean"][0, 0]).all()

        def on_train_batch_end(self, trainer, pl_module, *args):
            self.learner[pl_module.policy_version] = [pl_module.obs_rms.mean.tolist(), pl_module.obs_rms.var.tolist()]

    L.seed_everything(0, verbose=False)
    model = ReportingAPPO(normalize_observations=True, update_epochs=1, minibatch_size=64, hidden=[16])
    dm = ExperienceDataModule("Pendulum-v1", num_envs=2, rollout_steps=16, total_env_steps=3000, sampler="async",
                              num_sampler_procs=2, weight_sync_every=1, seed=0)
    rec = Record()
    trainer = L.Trainer(accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[rec])
    trainer.fit(model, datamodule=dm)
    json.dump({"learner": rec.learner, "used": rec.used}, open(sys.argv[1], "w"))
    """
)


def test_async_samplers_act_with_the_learners_observation_statistics(tmp_path: Path) -> None:
    script = tmp_path / "run.py"
    script.write_text(ASYNC_SCRIPT)
    out = tmp_path / "out.json"
    shm_before = shm_segments()
    code, text, _ = run_in_own_group([sys.executable, str(script), str(out)], tmp_path, 180, "async run")
    assert code == 0, text[-3000:]
    assert shm_segments() - shm_before == set()
    result = json.loads(out.read_text())
    learner = {int(k): v for k, v in result["learner"].items()}
    used = result["used"]
    assert len(used) >= 50
    for version, mean, var in used:  # exactly the statistics the learner had at that version
        assert [mean, var] == learner[version], version
    assert max(version for version, _, _ in used) >= 20  # new statistics kept arriving
    assert any(mean != [0.0, 0.0, 0.0] for _, mean, _ in used)


# ----- DDP: every rank folds in every rank's samples ---------------------------------------------------------
DDP_SCRIPT = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    import lightning as L
    from lightning_accelrl import PPO, ExperienceDataModule

    class Keep(L.Callback):
        def __init__(self):
            self.observations, self.rewards = [], []

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.observations.append(batch["observation"].clone())

    def main():
        L.seed_everything(0, verbose=False)
        keep = Keep()
        model = PPO(normalize_observations=True, normalize_rewards=True, update_epochs=1, minibatch_size=32,
                    hidden=(16,))
        dm = ExperienceDataModule("Pendulum-v1", num_envs=2, rollout_steps=16, total_env_steps=4 * 2 * 32, seed=0)
        trainer = L.Trainer(strategy="ddp", devices=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                            enable_progress_bar=False, enable_model_summary=False, callbacks=[keep])
        trainer.fit(model, datamodule=dm)
        torch.save({"observations": torch.stack(keep.observations), "obs": dict(model.obs_rms.state_dict()),
                    "ret": dict(model.return_rms.state_dict())},
                   os.path.join(sys.argv[1], f"rank{trainer.global_rank}.pt"))

    if __name__ == "__main__":
        main()
    """
)


def test_ddp_ranks_share_the_statistics_of_all_ranks(tmp_path: Path) -> None:
    script = tmp_path / "ddp_stats.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    code, text, _ = run_in_own_group(
        [sys.executable, str(script), str(tmp_path)], tmp_path, 150, "DDP run", env, 10
    )
    assert code == 0, text[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key in ("mean", "var", "count"):
        assert torch.equal(ranks[0]["obs"][key], ranks[1]["obs"][key]), key
        assert torch.equal(ranks[0]["ret"][key], ranks[1]["ret"][key]), key
    everything = torch.cat([r["observations"].reshape(-1, 3) for r in ranks]).double()
    assert not torch.equal(ranks[0]["observations"], ranks[1]["observations"])  # each rank has its own envs
    assert float(ranks[0]["obs"]["count"]) == len(everything) == 4 * 2 * 32
    torch.testing.assert_close(ranks[0]["obs"]["mean"].double(), everything.mean(0), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(
        ranks[0]["obs"]["var"].double(), everything.var(0, unbiased=False), rtol=1e-5, atol=1e-6
    )
    assert float(ranks[0]["ret"]["count"]) == 4 * 2 * 32


# ----- the recipe through the command line ------------------------------------------------------------------
def test_recipe_runs_with_observation_normalization_and_evaluates_from_its_checkpoint(tmp_path: Path) -> None:
    cli = [sys.executable, "-m", "lightning_accelrl.cli"]
    quiet = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]
    short = ["--data.total_env_steps", "2048", "--data.rollout_steps", "256", "--data.updates_per_epoch", "2"]
    opts = ["--model.init_args.normalize_observations", "true", "--summary.eval_episodes", "2"]
    fit = subprocess.run(
        [*cli, "fit", "--recipe", "ppo-pendulum", *short, *opts, *quiet],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert fit.returncode == 0, fit.stderr[-3000:]
    summary = json.loads(
        (tmp_path / fit.stdout.strip().splitlines()[-1].removeprefix("summary: ")).read_text()
    )
    assert summary["env_steps"] == 2048 and "eval_return_mean" in summary
    ckpt = next(tmp_path.glob("runs/ppo-pendulum*/version_0/checkpoints/last.ckpt"))
    state = torch.load(ckpt, weights_only=True)
    assert float(state["state_dict"]["obs_rms.count"]) == 2048
    assert float(state["state_dict"]["return_rms.count"]) == 2048  # the recipe scales rewards
    evaluate = subprocess.run(
        [*cli, "evaluate", "--ckpt", str(ckpt), "--episodes", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-3000:]
    assert json.loads(evaluate.stdout.strip().splitlines()[-1])["episodes"] == 2


def test_halfcheetah_recipe_runs_through_the_cli(tmp_path: Path) -> None:
    """ppo-halfcheetah for two rollouts: rl-zoo's network (ReLU, 256x256, log-std from -2), both normalizations."""
    pytest.importorskip("mujoco")
    cmd = [
        sys.executable, "-m", "lightning_accelrl.cli", "fit", "--recipe", "ppo-halfcheetah",
        "--data.total_env_steps", "1024", "--data.updates_per_epoch", "2", "--summary.eval_episodes", "1",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path),
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(next(tmp_path.glob("**/summary.json")).read_text())
    assert summary["env_steps"] == 1024 and summary["updates"] == 2
    assert summary["eval_episodes"] == 1 and np.isfinite(summary["eval_return_mean"])
    state = torch.load(next(tmp_path.glob("**/checkpoints/last.ckpt")), weights_only=True)
    weights = state["state_dict"]
    assert float(weights["obs_rms.count"]) == 1024 and float(weights["return_rms.count"]) == 1024
    assert weights["net.policy_head.0.weight"].shape == (256, 17)
    assert torch.allclose(weights["net.log_std"], torch.full((6,), -2.0), atol=0.05)  # lr 2e-5: barely moved
    assert state["hyper_parameters"]["activation"] == "relu"
