"""DDP on CPU (gloo), 2 ranks: identical parameters after training, per-rank env seeds, summed statistics.

Lightning's ``strategy="ddp"`` starts the other rank by re-running the script, so the run happens in a
script file started with ``sys.executable``; each rank writes what it saw to a file.
"""

from __future__ import annotations

import os
import sys
import textwrap

import gymnasium as gym
import numpy as np
import pytest
import torch
from process_helpers import run_in_own_group
from rank_recording import with_tests_dir_on_path

from lightning_accelrl.envs import env_seeds

NUM_ENVS, ROLLOUT, SEED = 2, 32, 3
UPDATES = 6
SCRIPT = textwrap.dedent(
    f"""
    import atexit, os, sys, weakref
    import torch
    torch.set_num_threads(1)
    import lightning as L
    from lightning_accelrl import PPO, ExperienceDataModule
    from rank_recording import MemLogger, flat


    WORLD = [lambda: None]  # a weak reference to the default process group, taken when training starts


    class Record(L.Callback):
        def __init__(self):
            self.first_obs = None
            self.initial = None
            self.local_episodes = []

        def on_train_start(self, trainer, pl_module):
            WORLD[0] = weakref.ref(torch.distributed.group.WORLD)  # whether anything still holds it at exit
            self.initial = flat(pl_module)
            self.rng_state = torch.get_rng_state()  # what action sampling will draw from

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if self.first_obs is None:
                self.first_obs = batch["observation"][0].clone()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.local_episodes.append(trainer.datamodule.tracker.episodes)


    def record_process_group_at_exit(out, world):
        # registered before fit, so it runs after every exit handler registered during fit
        import torch.distributed as dist
        rank = os.environ.get("LOCAL_RANK", "0")
        with open(os.path.join(out, f"exit{{rank}}.txt"), "w") as f:
            f.write(f"{{dist.is_initialized()}} {{world[0]() is not None}}")


    def main():
        out = sys.argv[1]
        atexit.register(record_process_group_at_exit, out, WORLD)
        L.seed_everything(0, verbose=False)
        rec, mem = Record(), MemLogger()
        model = PPO(update_epochs=2, minibatch_size=32, hidden=(16, 16))
        dm = ExperienceDataModule(
            "CartPole-v1", num_envs={NUM_ENVS}, rollout_steps={ROLLOUT},
            total_env_steps={UPDATES * 2 * NUM_ENVS * ROLLOUT}, seed={SEED},
        )
        # checkpoints on: saving one gathers every rank's sampler state over a gloo group of the library's
        trainer = L.Trainer(
            strategy="ddp", devices=2, accelerator="cpu", logger=mem, log_every_n_steps=1, default_root_dir=out,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[rec],
        )
        trainer.fit(model, datamodule=dm)
        torch.save(
            {{
                "rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "params": flat(model),
                "initial": rec.initial,
                "rng_state": rec.rng_state,
                "first_obs": rec.first_obs,
                "logged_episodes": [row["episodes"] for row in mem.rows if "episodes" in row],
                "local_episodes": rec.local_episodes,
                "updates": dm.updates_done,
                "policy_lags": dict(dm.lags.histogram),
                "global_step": trainer.global_step,
            }},
            os.path.join(out, f"rank{{trainer.global_rank}}.pt"),
        )


    if __name__ == "__main__":
        main()
    """
)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory) -> dict[int, dict]:
    tmp = tmp_path_factory.mktemp("ddp")
    script = tmp / "ddp_ppo.py"
    script.write_text(SCRIPT)
    env = with_tests_dir_on_path(dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    # its own process group: rank 1 and any helper can be found and ended
    code, text, _ = run_in_own_group([sys.executable, str(script), str(tmp)], tmp, 120, "DDP run", env, 10)
    assert code == 0, text[-4000:]
    results = {}
    for rank in (0, 1):
        path = tmp / f"rank{rank}.pt"
        assert path.exists(), text[-4000:]
        results[rank] = torch.load(path, weights_only=False)
        results[rank]["initialized_at_exit"] = (tmp / f"exit{rank}.txt").read_text()
    return results


def test_process_groups_are_destroyed_and_freed_before_the_interpreter_exits(ddp_run) -> None:
    # a gloo group left to interpreter finalization can abort the process with SIGABRT after a finished fit:
    # at exit no group is initialized, and nothing holds the default group any more (it was freed)
    assert [ddp_run[rank]["initialized_at_exit"] for rank in (0, 1)] == ["False False", "False False"]


def test_both_ranks_ran_the_same_updates(ddp_run) -> None:
    for rank, r in ddp_run.items():
        assert r["rank"] == rank and r["world_size"] == 2
        # the budget is over both ranks: total / (T * B * world_size) updates each
        assert r["updates"] == UPDATES
        assert r["policy_lags"] == {0: UPDATES}
        assert r["global_step"] == UPDATES * 2 * (NUM_ENVS * ROLLOUT // 32)


def test_parameters_identical_across_ranks(ddp_run) -> None:
    p0, p1 = ddp_run[0]["params"], ddp_run[1]["params"]
    assert torch.equal(ddp_run[0]["initial"], ddp_run[1]["initial"])
    assert not torch.equal(p0, ddp_run[0]["initial"])  # training changed them
    torch.testing.assert_close(p0, p1, rtol=0, atol=0)


def test_each_rank_uses_its_own_env_seeds(ddp_run) -> None:
    for rank, r in ddp_run.items():
        for i, s in enumerate(env_seeds(SEED, rank, NUM_ENVS)):
            env = gym.make("CartPole-v1")
            np.testing.assert_array_equal(r["first_obs"][i].numpy(), env.reset(seed=s)[0])
            env.close()
    assert not torch.equal(ddp_run[0]["first_obs"], ddp_run[1]["first_obs"])


def test_logged_episodes_are_summed_over_ranks(ddp_run) -> None:
    local0, local1 = ddp_run[0]["local_episodes"], ddp_run[1]["local_episodes"]
    assert len(local0) == len(local1) == UPDATES
    total = [a + b for a, b in zip(local0, local1, strict=True)]
    assert total[-1] > 0
    for rank in (0, 1):
        assert ddp_run[rank]["logged_episodes"] == total  # every step, on both ranks


def test_action_sampling_is_seeded_per_rank(ddp_run) -> None:
    assert not torch.equal(ddp_run[0]["rng_state"], ddp_run[1]["rng_state"])
