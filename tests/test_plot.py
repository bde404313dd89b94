"""``accelrl plot``: learning curves from run folders (hand-made CSVs for the details, two real runs end to end)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_accelrl import cli
from lightning_accelrl.plot import LEGEND_WIDTH, aggregate, find_runs, group_runs, plot_runs

pytest.importorskip("matplotlib")
PNG = b"\x89PNG\r\n\x1a\n"
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def write_run(
    folder: Path,
    steps: list[float],
    returns: list[float],
    speed: float | None = 1000.0,
    config: dict | None = None,
    summary: dict | None = None,
) -> Path:
    folder.mkdir(parents=True)
    fields = ["env_steps", "episode_return_mean", "step", "train/loss"] + (
        ["env_steps_per_s"] if speed else []
    )
    with open(folder / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fields)
        w.writeheader()
        w.writerow({"env_steps": 0, "step": 0, "train/loss": 1.0})  # no episode finished yet: skipped
        for i, (s, r) in enumerate(zip(steps, returns)):
            row = {"env_steps": s, "episode_return_mean": r, "step": i + 1, "train/loss": 0.5}
            if speed:
                row["env_steps_per_s"] = speed
            w.writerow(row)
    if config is not None:
        import yaml

        (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if summary is not None:
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def test_aggregate_mean_and_band_over_the_common_range() -> None:
    a = (np.array([0.0, 10.0, 20.0]), np.array([0.0, 10.0, 20.0]))
    b = (np.array([5.0, 15.0, 30.0]), np.array([10.0, 20.0, 35.0]))  # b(x) = x + 5
    grid, mean, low, high = aggregate([a, b], "minmax")
    assert grid.tolist() == [5.0, 10.0, 15.0, 20.0]  # where both runs have data
    assert mean.tolist() == [7.5, 12.5, 17.5, 22.5]  # a(5)=5, b(5)=10 ...
    assert low.tolist() == [5.0, 10.0, 15.0, 20.0] and high.tolist() == [10.0, 15.0, 20.0, 25.0]
    _, mean_sd, low_sd, high_sd = aggregate([a, b], "std")
    assert np.allclose(high_sd - mean_sd, 2.5) and np.allclose(mean_sd - low_sd, 2.5)


def test_runs_wall_time_groups_and_resumed_runs(tmp_path: Path) -> None:
    write_run(tmp_path / "runs/ppo/version_0", [100, 200, 300], [10, 20, 30], speed=50.0)
    write_run(tmp_path / "runs/ppo/version_1", [100, 200, 300], [12, 18, 40], speed=100.0)
    write_run(
        tmp_path / "runs/a2c/version_0",
        [100, 200],
        [5, 6],
        speed=None,
        summary={"wall_time_s": 8.0},
    )
    runs = {r.label: r for r in find_runs([tmp_path / "runs"])}
    assert sorted(runs) == ["a2c/version_0", "ppo/version_0", "ppo/version_1"]
    assert runs["ppo/version_0"].wall_time.tolist() == [2.0, 4.0, 6.0]  # env_steps / env_steps_per_s
    assert runs["ppo/version_0"].wall_time_exact
    a2c = runs["a2c/version_0"]  # no throughput column: summary's total spread over the logged steps
    assert not a2c.wall_time_exact and a2c.wall_time.tolist() == [8.0 * 2 / 3, 8.0]
    assert {k: len(v) for k, v in group_runs(list(runs.values()), "name").items()} == {"ppo": 2, "a2c": 1}
    assert {k: len(v) for k, v in group_runs(list(runs.values())).items()} == {
        "ppo": 2,
        "a2c": 1,
    }  # no configs
    assert len(group_runs(list(runs.values()), "none")) == 3

    # a run resumed from version_0's checkpoint continues its curve: one run, points after the checkpoint replaced
    write_run(
        tmp_path / "runs/ppo/version_2",
        [250, 400],
        [25, 45],
        config={"ckpt_path": "runs/ppo/version_0/checkpoints/last.ckpt"},
    )
    runs = {r.label: r for r in find_runs([tmp_path / "runs/ppo"])}
    assert sorted(runs) == ["ppo/version_1", "ppo/version_2"]
    assert runs["ppo/version_2"].env_steps.tolist() == [100, 200, 250, 400]
    assert runs["ppo/version_2"].returns.tolist() == [10, 20, 25, 45]

    out = tmp_path / "curve.png"
    drawn = plot_runs([tmp_path / "runs"], out, spread="std")
    assert out.read_bytes().startswith(PNG) and drawn["groups"] == {"ppo": 2, "a2c": 1}


def test_long_run_names_are_broken_into_legend_lines(tmp_path: Path) -> None:
    """A run name with its overrides (as ``accelrl fit`` names runs) is drawn on lines of at most
    ``LEGEND_WIDTH`` characters, broken before each ``+``; short labels stay on one line."""
    name = (
        "ppo-minatar-breakout+model.activation=relu+model.hidden=_256,256_+model.lr=0.001+model.network=mlp"
    )
    write_run(tmp_path / f"runs/{name}/version_0", [100, 200], [1, 2])
    write_run(tmp_path / f"runs/{name}/version_1", [100, 200], [2, 3])
    write_run(tmp_path / "runs/ppo-cartpole/version_0", [100, 200], [10, 20])
    drawn = plot_runs([tmp_path / "runs"], tmp_path / "curve.png", x="env_steps", group_by="name")
    long, short = sorted(drawn["legend"], key=len, reverse=True)
    assert short == "ppo-cartpole"
    lines = long.split("\n")
    assert len(lines) > 1 and all(len(line) <= LEGEND_WIDTH for line in lines)
    assert all(line.startswith("+") for line in lines[1:])
    assert "".join(lines) == f"{name} (mean of 2, min–max)"


def test_runs_are_grouped_by_config_up_to_seeds(tmp_path: Path) -> None:
    """Runs in one folder name with another env are two groups; seeds of one config are one group."""
    recipe = {
        "seed_everything": 0,
        "trainer": {"logger": [{"init_args": {"name": "ppo-cartpole"}}], "max_epochs": -1},
        "model": {"class_path": "lightning_accelrl.algos.PPO", "init_args": {"lr": 0.002}},
        "data": {"env": "CartPole-v1", "num_envs": 16, "seed": None},
    }
    acrobot = {**recipe, "data": {**recipe["data"], "env": "Acrobot-v1"}}
    seed_1 = {**recipe, "seed_everything": 1, "data": {**recipe["data"], "seed": 7}}
    write_run(tmp_path / "runs/ppo-cartpole/version_0", [100, 200], [10, 20], config=recipe)
    write_run(tmp_path / "runs/ppo-cartpole/version_1", [100, 200], [12, 22], config=seed_1)
    write_run(tmp_path / "runs/ppo-cartpole/version_2", [100, 200], [-500, -400], config=acrobot)
    runs = find_runs([tmp_path / "runs"])
    groups = {k: sorted(r.path.name for r in v) for k, v in group_runs(runs).items()}
    ids = {r.path.name: r.config_id for r in runs}
    assert ids["version_0"] == ids["version_1"] != ids["version_2"]
    assert groups == {
        f"ppo-cartpole [{ids['version_0']}]": ["version_0", "version_1"],
        f"ppo-cartpole [{ids['version_2']}]": ["version_2"],
    }
    assert (
        len(group_runs(runs, "name")) == 1
    )  # grouping by folder name alone would average CartPole with Acrobot

    # summary.json's config_id (written by accelrl fit) decides over config.yaml
    write_run(
        tmp_path / "more/x/version_0", [100], [1], config=acrobot, summary={"config_id": ids["version_0"]}
    )
    (more,) = find_runs([tmp_path / "more"])
    assert more.config_id == ids["version_0"]


def test_game_scores_are_drawn_with_y(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = write_run(tmp_path / "runs/ppo-breakout/version_0", [100, 200, 300], [1, 2, 3])
    with open(run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows[1:]:  # Breakout: bricks of 1, 4 and 7 points, so the score exceeds the clipped return
        row["episode_score_mean"] = str(4 * float(row["episode_return_mean"]))
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, [*rows[0].keys(), "episode_score_mean"])
        w.writeheader()
        w.writerows(rows)
    (score,) = find_runs([run], y="episode_score_mean")
    assert score.returns.tolist() == [4.0, 8.0, 12.0] and score.env_steps.tolist() == [100, 200, 300]
    (ret,) = find_runs([run])
    assert ret.returns.tolist() == [1.0, 2.0, 3.0]
    out = tmp_path / "score.png"
    assert cli.main(["plot", str(run), "--out", str(out), "--y", "episode_score_mean"]) == 0
    assert out.read_bytes().startswith(PNG) and "wrote" in capsys.readouterr().out


def test_evaluations_are_drawn_with_y_and_timed_from_the_training_rows(tmp_path: Path) -> None:
    """VideoEvaluation's rows carry no throughput: their wall time is interpolated between the rows that do."""
    run = tmp_path / "runs/ppo/version_0"
    run.mkdir(parents=True)
    rows = [
        {"env_steps": 100, "episode_return_mean": 10, "env_steps_per_s": 100, "step": 1},  # 1 s
        {"env_steps": 150, "eval/return_mean": 30, "step": 2},
        {"env_steps": 300, "episode_return_mean": 20, "env_steps_per_s": 75, "step": 3},  # 4 s
        {"env_steps": 300, "eval/return_mean": 50, "step": 3},
    ]
    with open(run / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(
            f, ["env_steps", "episode_return_mean", "env_steps_per_s", "step", "eval/return_mean"]
        )
        w.writeheader()
        w.writerows(rows)
    (evaluations,) = find_runs([run], y="eval/return_mean")
    assert evaluations.returns.tolist() == [30.0, 50.0] and evaluations.env_steps.tolist() == [150, 300]
    assert evaluations.wall_time.tolist() == pytest.approx([1.75, 4.0]) and evaluations.wall_time_exact


def test_a_real_run_with_evaluations_is_plotted(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import lightning as L
    from foundation_helpers import trainer_kwargs
    from lightning.pytorch.loggers import CSVLogger

    from lightning_accelrl import PPO, ExperienceDataModule
    from lightning_accelrl.callbacks import VideoEvaluation

    L.seed_everything(0, verbose=False)
    dm = ExperienceDataModule(
        "CartPole-v1", num_envs=4, rollout_steps=16, total_env_steps=768, updates_per_epoch=2
    )
    evaluation = VideoEvaluation(every_n_env_steps=256, episodes=2)
    logger = CSVLogger(tmp_path / "runs", name="ppo")
    trainer = L.Trainer(
        **trainer_kwargs(logger=logger, log_every_n_steps=1), max_epochs=-1, callbacks=[evaluation]
    )
    trainer.fit(PPO(hidden=(8,)), datamodule=dm)
    (run,) = find_runs([tmp_path / "runs"], y="eval/return_mean")
    assert run.env_steps.tolist() == [256, 512, 768]
    assert run.returns.tolist() == pytest.approx([r["return_mean"] for r in evaluation.results])
    assert run.wall_time_exact and np.all(np.diff(run.wall_time) > 0)
    out = tmp_path / "eval.png"
    assert cli.main(["plot", str(tmp_path / "runs"), "--out", str(out), "--y", "eval/return_mean"]) == 0
    assert out.read_bytes().startswith(PNG)
    capsys.readouterr()
    assert cli.main(["plot", str(tmp_path / "runs"), "--out", str(out), "--y", "episode_score_mean"]) == 2


def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = write_run(tmp_path / "runs/x/version_0", [1, 2], [1, 2])
    (tmp_path / "empty").mkdir()
    (tmp_path / "outdir.png").mkdir()
    cases = [
        (["plot", str(tmp_path / "missing"), "--out", str(tmp_path / "c.png")], "run directory"),
        (["plot", str(tmp_path / "empty"), "--out", str(tmp_path / "c.png")], "no metrics.csv under"),
        (["plot", str(run), "--out", str(tmp_path / "no/such/dir/c.png")], "does not exist"),
        (["plot", str(run), "--out", str(tmp_path / "outdir.png")], "it is a directory"),
        (["plot", str(run), "--out", str(tmp_path / "c.txt")], "use a .png"),
        (["plot", str(run)], "required: --out"),
        (["plot", str(run), "--out", str(tmp_path / "c.png"), "--x", "episodes"], "invalid choice"),
        (
            ["plot", str(run), "--out", str(tmp_path / "c.png"), "--y", "episode_score_mean"],
            "logged no game score",
        ),
        (
            ["plot", str(run), "--out", str(tmp_path / "c.png"), "--y", "eval/return_mean"],
            "logged no evaluation: eval/return_mean comes from the VideoEvaluation callback",
        ),
    ]
    for args, fragment in cases:
        assert cli.main(args) == 2, args
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("accelrl: error:") and fragment in err[0], (args, err)
    assert not (tmp_path / "c.png").exists()


def test_real_runs_group_by_recipe_and_overrides_not_by_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """Two seeds of one config share a folder and a curve; the same recipe on CartPole-v0 is its own folder and curve."""
    import yaml

    from lightning_accelrl.run_name import config_id

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["accelrl"])
    monkeypatch.setenv("PYTHONWARNINGS", "ignore::DeprecationWarning")  # fit sets it; restored after the test
    budget = ["--data.total_env_steps", "2048", "--data.updates_per_epoch", "4"]
    for extra in (["--seed_everything", "0"], ["--seed_everything", "1"], ["--data.env", "CartPole-v0"]):
        assert cli.main(["fit", "--recipe", "ppo-cartpole", *budget, *extra, *QUIET]) == 0
    torch.set_num_threads(
        1
    )  # fit set --torch_threads for this process already; keep the test session's value
    cartpole = "ppo-cartpole+data.total_env_steps=2048+data.updates_per_epoch=4"
    other_env = "ppo-cartpole+data.env=CartPole-v0+data.total_env_steps=2048+data.updates_per_epoch=4"
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [other_env, cartpole]
    assert sorted(p.name for p in (tmp_path / "runs" / cartpole).iterdir()) == ["version_0", "version_1"]
    ckpt = torch.load(tmp_path / "runs" / cartpole / "version_0/checkpoints/last.ckpt", weights_only=True)
    assert any("RNGState" in key for key in ckpt["callbacks"])  # full resume is on by default in accelrl fit
    for run in (tmp_path / "runs").glob(
        "*/version_*"
    ):  # the identity fit records is the one config.yaml gives
        summary = json.loads((run / "summary.json").read_text())
        assert summary["config_id"] == config_id(yaml.safe_load((run / "config.yaml").read_text()))

    capsys.readouterr()
    assert cli.main(["plot", "runs", "--out", "curve.png"]) == 0
    out = capsys.readouterr().out
    assert f"{cartpole} (2 runs)" in out and f"{other_env} (1 run)" in out
    assert (tmp_path / "curve.png").read_bytes().startswith(PNG)
    runs = find_runs([tmp_path / "runs"])
    assert len(runs) == 3 and all(r.env_steps[-1] == 2048 and r.wall_time_exact for r in runs)
    assert all(np.all(np.diff(r.wall_time) > 0) for r in runs)  # wall time grows with env steps

    # the plot command itself needs no torch (fast start)
    code = (
        "import sys\nfrom lightning_accelrl import cli\n"
        "assert cli.main(['plot', 'runs', '--out', 'c2.png', '--x', 'wall_time']) == 0\n"
        "print('torch' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "c2.png").read_bytes().startswith(PNG)
