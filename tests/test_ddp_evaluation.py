"""VideoEvaluation under DDP (CPU, gloo, 2 ranks): rank 0 plays the episodes, every rank gets the ``eval/*``
values, so a ModelCheckpoint monitoring ``eval/return_mean`` decides alike on every rank. Before, only rank 0 had
the metric: rank 0 saved (a barrier) while rank 1 trained on, and the run hung. Sync samplers and async samplers
(whose ranks count env steps apart: when to evaluate follows rank 0's count)."""

from __future__ import annotations

import json
import os
import sys
import textwrap

import pytest
from process_helpers import run_in_own_group
from rank_recording import with_tests_dir_on_path

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    torch.set_num_threads(1)
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning_accelrl import PPO, ExperienceDataModule
    from lightning_accelrl.callbacks import VideoEvaluation


    def main():
        out, sampler = sys.argv[1], sys.argv[2]
        L.seed_everything(0, verbose=False)
        extra = {"num_sampler_procs": 1} if sampler == "async" else {}
        dm = ExperienceDataModule(
            "CartPole-v1", num_envs=2, rollout_steps=32, total_env_steps=3072, updates_per_epoch=4,
            sampler=sampler, **extra,
        )
        evaluation = VideoEvaluation(every_n_env_steps=768, episodes=2)
        best = ModelCheckpoint(
            dirpath=os.path.join(out, "ckpt"), monitor="eval/return_mean", mode="max", filename="best"
        )
        trainer = L.Trainer(
            strategy="ddp", devices=2, accelerator="cpu", logger=False, default_root_dir=out,
            enable_progress_bar=False, enable_model_summary=False, callbacks=[evaluation, best],
        )
        trainer.fit(PPO(update_epochs=2, minibatch_size=32, hidden=(16,)), datamodule=dm)
        record = {
            "evaluations": len(evaluation.results),
            "best_score": float(best.best_model_score),
            "metric": float(trainer.callback_metrics["eval/return_mean"]),
        }
        with open(os.path.join(out, f"rank{trainer.global_rank}.json"), "w") as f:
            json.dump(record, f)


    if __name__ == "__main__":
        main()
    """
)


@pytest.mark.parametrize("sampler", ["sync", "async"])
def test_model_checkpoint_monitors_the_evaluation_on_every_rank(sampler: str, tmp_path) -> None:
    script = tmp_path / "ddp_eval.py"
    script.write_text(SCRIPT)
    env = with_tests_dir_on_path(dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"))
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    code, text, _ = run_in_own_group(
        [sys.executable, str(script), str(tmp_path), sampler], tmp_path, 180, "DDP run", env, 10
    )
    assert code == 0, text[-4000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["evaluations"] >= 2 and ranks[1]["evaluations"] == 0  # played on rank 0 only
    assert ranks[0]["best_score"] == ranks[1]["best_score"] and ranks[0]["metric"] == ranks[1]["metric"]
    assert (tmp_path / "ckpt" / "best.ckpt").is_file()
