"""Full resume: a run stopped halfway and resumed from its checkpoint ends exactly where the straight run ends.

What a checkpoint holds: model, optimizer, env-step counter and episode window (data module state), policy
version, RNG states (``RNGState``), and for replay algorithms the table (items, priorities, limiter counters).
What it cannot hold: the envs' running episodes. ``ExperienceDataModule`` rebuilds its envs on resume and
resets them with their seeds, so running episodes restart. The PPO test below therefore checkpoints at a moment
when every env has just finished an episode (counting env: lengths 2 and 3, rollouts of 6 steps); the
restarted envs are then in exactly the state the straight run's envs are in, and the resumed run is
**bit-identical** to the straight run: same parameters, same optimizer state, same RNG state, same episode
statistics. The control without ``RNGState`` shows the test can fail.

Atomic checkpoints: a process killed (``kill -9``) while writing a checkpoint leaves the previous one loadable.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
from foundation_helpers import COUNTING_ID, trainer_kwargs
from lightning.pytorch.callbacks import ModelCheckpoint

from lightning_accelrl import PPO, ExperienceDataModule
from lightning_accelrl.algos import DQN
from lightning_accelrl.callbacks import RNGState
from lightning_accelrl.callbacks.rng import capture_rng_state, restore_rng_state
from lightning_accelrl.checkpoint_io import AtomicCheckpointIO, atomic_torch_save

ROLLOUT = 6  # counting env lengths 2 and 3 (seeds 0, 1) both divide it: every rollout ends on episode ends
ENVS = 2
UPDATES = 8  # straight run; the stopped run does 4 (2 epochs of 2)


def ppo_fit(root: Path, max_epochs: int = -1, ckpt_path: str | None = None, rng: bool = True):
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(
        COUNTING_ID,
        num_envs=ENVS,
        rollout_steps=ROLLOUT,
        total_env_steps=UPDATES * ROLLOUT * ENVS,
        seed=0,
        updates_per_epoch=2,
    )
    model = PPO(lr=3e-2, update_epochs=2, minibatch_size=4, hidden=(16,), entropy_coef=0.01)
    callbacks = [ModelCheckpoint(dirpath=root / "ckpt", save_last=True, save_top_k=-1)]
    if rng:
        callbacks.append(RNGState())
    trainer = L.Trainer(
        **trainer_kwargs(enable_checkpointing=True),
        default_root_dir=root,
        max_epochs=max_epochs,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, dm, trainer


def params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_resumed_ppo_run_is_bit_identical_to_the_straight_run(tmp_path: Path) -> None:
    straight, dm_s, trainer_s = ppo_fit(tmp_path / "straight")
    rng_straight = torch.get_rng_state()
    assert dm_s.updates_done == UPDATES and straight.policy_version == UPDATES

    half, dm_h, _ = ppo_fit(tmp_path / "half", max_epochs=2)
    assert dm_h.updates_done == UPDATES // 2
    ckpt = tmp_path / "half" / "ckpt" / "last.ckpt"
    assert ckpt.is_file()
    halfway = params(half)
    assert any(not torch.equal(halfway[k], v) for k, v in params(straight).items())  # training moved on

    resumed, dm_r, trainer_r = ppo_fit(tmp_path / "resumed", ckpt_path=str(ckpt))
    assert dm_r.updates_done == UPDATES and resumed.policy_version == UPDATES
    assert dm_r.env_steps == dm_s.env_steps == UPDATES * ROLLOUT * ENVS
    for key, value in params(straight).items():
        assert torch.equal(params(resumed)[key], value), key
    opt_s = trainer_s.optimizers[0].state_dict()["state"]
    opt_r = trainer_r.optimizers[0].state_dict()["state"]
    for i in opt_s:
        for k in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(opt_s[i][k], opt_r[i][k]), (i, k)
    assert torch.equal(torch.get_rng_state(), rng_straight)
    # the curve continues: the episode window and counters carry over
    assert list(dm_r.tracker.recent_returns) == list(dm_s.tracker.recent_returns)
    assert dm_r.tracker.episodes == dm_s.tracker.episodes


def test_without_rng_state_the_resumed_run_differs(tmp_path: Path) -> None:
    """The control: the same resume without ``RNGState`` samples other actions and minibatches."""
    straight, _, _ = ppo_fit(tmp_path / "straight", rng=False)
    ppo_fit(tmp_path / "half", max_epochs=2, rng=False)
    resumed, _, _ = ppo_fit(
        tmp_path / "resumed", ckpt_path=str(tmp_path / "half" / "ckpt" / "last.ckpt"), rng=False
    )
    assert any(not torch.equal(params(resumed)[k], v) for k, v in params(straight).items())


def test_rng_state_round_trip_through_weights_only_load(tmp_path: Path) -> None:
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    random.gauss(0, 1), np.random.normal()  # cached gaussians are part of the state
    state = capture_rng_state()
    expected = (random.random(), np.random.random(), torch.rand(1).item(), random.gauss(0, 1))
    torch.save(state, tmp_path / "rng.pt")
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), np.random.random(), torch.rand(1).item(), random.gauss(0, 1)) == expected


# ----- replay: table, priorities and limiter counters ----------------------------------------------------------------
class _Capture(L.Callback):
    """Records the replay table as the resumed run starts (before any new insert or sample)."""

    def on_train_start(self, trainer, pl_module) -> None:  # noqa: ANN001
        table = trainer.datamodule.source.table
        self.info = table.info()
        self.state = table.state_dict()


def dqn_fit(root: Path, max_epochs: int, ckpt_path: str | None = None, extra: list | None = None):
    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(
        COUNTING_ID,
        num_envs=ENVS,
        total_env_steps=10_000,
        seed=0,
        updates_per_epoch=20,
        batch_size=8,
        replay_capacity=64,
        replay_ratio=2.0,
        learning_starts=16,
    )
    model = DQN(hidden=(8,), prioritized=True, n_step=2, target_update_period=5)
    trainer = L.Trainer(
        **trainer_kwargs(enable_checkpointing=True),
        default_root_dir=root,
        max_epochs=max_epochs,
        callbacks=[ModelCheckpoint(dirpath=root / "ckpt", save_last=True), RNGState(), *(extra or [])],
        plugins=[AtomicCheckpointIO()],
    )
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    return model, dm


def test_dqn_resume_restores_table_priorities_and_limiter_counters(tmp_path: Path) -> None:
    _, dm = dqn_fit(tmp_path / "first", max_epochs=3)  # 60 updates: the table is full and has been evicting
    table = dm.source.table
    saved_info, saved = table.info(), table.state_dict()
    assert saved_info["size"] == 64 and saved_info["deletes"] > 0 and saved_info["samples"] > 0
    assert len(set(saved["priorities"].tolist())) > 1  # TD-error priorities were written back

    capture = _Capture()
    _, dm2 = dqn_fit(
        tmp_path / "resumed",
        max_epochs=4,
        ckpt_path=str(tmp_path / "first" / "ckpt" / "last.ckpt"),
        extra=[capture],
    )
    for key in ("size", "inserts", "samples", "deletes", "next_key", "rate_limiter"):
        assert capture.info[key] == saved_info[key], key
    for key in ("keys", "priorities", "times_sampled", "recency"):
        assert torch.equal(capture.state[key], saved[key]), key
    assert dm2.env_steps > dm.env_steps and dm2.updates_done == 80  # and it went on from there


# ----- atomic checkpoints under kill -9 ------------------------------------------------------------------------------
# Writers are forked from the test process (torch already imported: ~10 ms per writer instead of seconds).
FORK = mp.get_context("fork")


class _Slow:
    """Pickled after the checkpoint file is opened and before any byte of the new checkpoint is written."""

    def __init__(self, event) -> None:  # noqa: ANN001
        self.event = event

    def __reduce__(self):
        self.event.set()
        time.sleep(60)
        return (int, (0,))


def _slow_writer(path: str, plain: bool, event) -> None:  # noqa: ANN001
    torch.set_num_threads(1)
    save = torch.save if plain else atomic_torch_save
    save({"k": 1, "state_dict": {"w": torch.full((1000,), 1.0)}}, path)
    save({"k": 2, "state_dict": {"w": torch.full((1000,), 2.0)}, "slow": _Slow(event)}, path)
    os._exit(0)


def _loop_writer(path: str, saved) -> None:  # noqa: ANN001
    torch.set_num_threads(1)
    io, k = AtomicCheckpointIO(), 0
    while True:
        k += 1
        io.save_checkpoint({"k": k, "state_dict": {"w": torch.full((4_000_000,), float(k))}}, path)
        saved.value = k


def _kill(proc) -> None:  # noqa: ANN001
    os.kill(proc.pid, signal.SIGKILL)
    proc.join(timeout=30)
    assert proc.exitcode == -signal.SIGKILL


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("mode", ["atomic", "plain"])
def test_kill_9_while_writing_leaves_the_previous_checkpoint(tmp_path: Path, mode: str) -> None:
    path, event = tmp_path / "last.ckpt", FORK.Event()
    proc = FORK.Process(target=_slow_writer, args=(str(path), mode == "plain", event))
    proc.start()
    assert event.wait(timeout=60)
    _kill(proc)  # killed after checkpoint 1, in the middle of writing checkpoint 2
    if mode == "plain":  # the control: torch.save in place has already truncated checkpoint 1
        with pytest.raises(Exception):  # noqa: B017 - any load error
            _load(path)
        return
    ckpt = _load(path)
    assert ckpt["k"] == 1 and torch.equal(ckpt["state_dict"]["w"], torch.full((1000,), 1.0))
    assert len(list(tmp_path.glob(".last.ckpt.*.tmp"))) == 1  # the torn write went to a temp file beside it


def test_kill_9_at_random_times_during_a_save_loop(tmp_path: Path) -> None:
    """A loop of 16 MB checkpoints, killed at random moments: the file always loads, whole and consistent."""
    rng, path = random.Random(0), tmp_path / "last.ckpt"
    for _ in range(4):
        saved = FORK.Value("i", 0)
        proc = FORK.Process(target=_loop_writer, args=(str(path), saved))
        proc.start()
        deadline = time.monotonic() + 60
        while saved.value < 1 and time.monotonic() < deadline:  # at least one checkpoint of this writer
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        _kill(proc)
        ckpt = _load(path)
        w = ckpt["state_dict"]["w"]
        assert ckpt["k"] >= 1 and w.shape == (4_000_000,) and bool((w == float(ckpt["k"])).all())
