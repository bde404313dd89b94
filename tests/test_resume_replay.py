"""Exact resume for replay algorithms: a DQN (C51, SAC, TD3) run resumed from a mid-run checkpoint ends bit-identical to
the straight run: parameters, optimizer state, replay table (items, priorities, limiter counters), env steps and
episode window.

What decides the run, and where it is kept: ε-greedy and action draws (torch's generator: ``RNGState``), the
replay table's sampling generator (the table's state), the pending transitions the limiter refused, the pushed
env-step count (schedules), the target network and update counter (the module's state). The envs' running
episodes cannot be checkpointed: the counting env (lengths 2 and 3 for seeds 0 and 1) is at an episode end for
both envs every 12 env steps, so the test resumes from the first epoch-end checkpoint taken at such a moment with
nothing pending (the n-step writer is empty at episode ends); the restarted envs are then in the state the straight
run's envs are in. The control without ``RNGState`` shows the test can fail.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch
from foundation_helpers import COUNTING_BOX_ID, COUNTING_ID, trainer_kwargs
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_accelrl import SAC, TD3, CategoricalDQN, ExperienceDataModule
from lightning_accelrl.algos import DQN
from lightning_accelrl.callbacks import RNGState
from lightning_accelrl.checkpoint_io import AtomicCheckpointIO

ENVS = 2
BUDGET = 360  # env steps: 30 episode-end moments of both envs


class Moments(L.Callback):
    """Epoch ends at which both envs just finished an episode and no transition is pending."""

    def __init__(self) -> None:
        self.eligible: list[int] = []

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        if dm.env_steps % 12 == 0 and dm.source.pending is None:
            self.eligible.append(trainer.current_epoch)


def make_model(algo: type):
    if algo is SAC:  # continuous actions: random for 40 env steps, then the policy's samples
        return SAC(actor_hidden=(16,), critic_hidden=(16,), n_step=2, random_steps=40)
    if algo is TD3:  # the actor and targets every 3 updates: the checkpoint keeps the update counter
        return TD3(actor_hidden=(16,), critic_hidden=(16,), n_step=2, random_steps=40, policy_delay=3)
    kwargs = {"network": "mlp", "hidden": (16,), "prioritized": True, "n_step": 2, "target_update_period": 7}
    if algo is CategoricalDQN:
        kwargs.update(v_min=0.0, v_max=10.0, num_atoms=11)
    return algo(exploration_fraction=0.5, **kwargs)


def fit(algo: type, root: Path, ckpt_path: str | None = None, rng: bool = True):
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(
        COUNTING_BOX_ID if algo in (SAC, TD3) else COUNTING_ID, num_envs=ENVS, total_env_steps=BUDGET, seed=0,
        updates_per_epoch=5, batch_size=16, replay_capacity=64, replay_ratio=4.0, learning_starts=32,
        vectorization="sync",
    )  # fmt: skip
    model = make_model(algo)
    moments = Moments()
    callbacks = [ModelCheckpoint(dirpath=root / "ckpt", save_top_k=-1, filename="{epoch}"), moments]
    if rng:
        callbacks.append(RNGState())
    trainer = L.Trainer(
        **trainer_kwargs(enable_checkpointing=True), default_root_dir=root, max_epochs=-1,
        callbacks=callbacks, plugins=[AtomicCheckpointIO()],
    )  # fmt: skip
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, dm, trainer, moments


def snapshot(model, dm, trainer) -> dict[str, torch.Tensor]:  # noqa: ANN001
    out = {f"param/{k}": v.detach().clone() for k, v in model.state_dict().items()}
    for o, optimizer in enumerate(trainer.optimizers):
        for i, state in optimizer.state_dict()["state"].items():
            for k in ("exp_avg", "exp_avg_sq", "step"):
                out[f"adam{o}/{i}/{k}"] = state[k].clone()
    table = dm.source.table.state_dict()
    for k in ("keys", "priorities", "times_sampled"):
        out[f"table/{k}"] = table[k].clone()
    info = dm.source.table.info()
    out["counters"] = torch.tensor([info[k] for k in ("inserts", "samples", "deletes", "next_key")])
    out["progress"] = torch.tensor([dm.env_steps, dm.updates_done, model.policy_version, model.env_steps])
    out["episodes"] = torch.tensor(list(dm.tracker.recent_returns) + [dm.tracker.episodes])
    return out


@pytest.mark.parametrize("algo", [DQN, CategoricalDQN, SAC, TD3], ids=["dqn", "c51", "sac", "td3"])
def test_resumed_replay_run_is_bit_identical_to_the_straight_run(tmp_path: Path, algo: type) -> None:
    model, dm, trainer, moments = fit(algo, tmp_path / "straight")
    straight = snapshot(model, dm, trainer)
    assert dm.env_steps == BUDGET
    # a moment well inside the run (the table has been evicting and sampling with priorities)
    resume_at = next(e for e in moments.eligible if e >= 3)
    ckpt = tmp_path / "straight" / "ckpt" / f"epoch={resume_at}.ckpt"
    saved = torch.load(ckpt, weights_only=True)  # checkpoints are data
    assert saved["accelrl"]["env_steps"] < BUDGET

    model_r, dm_r, trainer_r, _ = fit(algo, tmp_path / "resumed", ckpt_path=str(ckpt))
    resumed = snapshot(model_r, dm_r, trainer_r)
    assert resumed.keys() == straight.keys()
    for key, value in straight.items():
        assert torch.equal(resumed[key], value), key


def test_without_rng_state_the_resumed_replay_run_differs(tmp_path: Path) -> None:
    """The control: without the torch generator's state, ε-greedy draws other actions after the resume."""
    model, dm, trainer, moments = fit(DQN, tmp_path / "straight", rng=False)
    straight = snapshot(model, dm, trainer)
    resume_at = next(e for e in moments.eligible if e >= 3)
    ckpt = tmp_path / "straight" / "ckpt" / f"epoch={resume_at}.ckpt"
    model_r, dm_r, trainer_r, _ = fit(DQN, tmp_path / "resumed", ckpt_path=str(ckpt), rng=False)
    resumed = snapshot(model_r, dm_r, trainer_r)
    assert any(not torch.equal(resumed[k], v) for k, v in straight.items() if k.startswith("param/"))
