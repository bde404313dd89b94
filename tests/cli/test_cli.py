"""The accelrl command: fast paths without torch, one-line errors with exit code 2, fit/evaluate/resume end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

CLI = [sys.executable, "-m", "lightning_accelrl.cli"]
RECIPES = sorted(p.stem for p in (Path(__file__).parents[2] / "lightning_accelrl" / "recipes").glob("*.yaml"))
QUIET = ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"]


def accelrl(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def assert_one_line_error(proc: subprocess.CompletedProcess, fragment: str) -> None:
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("accelrl: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert fragment in errors[0], errors[0]


def test_help_and_recipes_list_do_not_import_torch(tmp_path: Path) -> None:
    code = (
        "import sys, contextlib, io\n"
        "from lightning_accelrl import cli\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    assert cli.main(['--help']) == 0\n"
        "    assert cli.main(['recipes', 'list']) == 0\n"
        "heavy = [m for m in ('torch', 'lightning', 'torchrl', 'tensordict') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_recipes_list_shows_every_recipe(tmp_path: Path) -> None:
    proc = accelrl("recipes", "list", cwd=tmp_path)
    assert proc.returncode == 0
    for name in RECIPES:
        assert name in proc.stdout
    assert "PPO" in proc.stdout and "A2C" in proc.stdout and "CartPole-v1" in proc.stdout
    assert "100,000 env steps" in proc.stdout


def test_recipes_show_prints_yaml(tmp_path: Path) -> None:
    proc = accelrl("recipes", "show", "ppo-cartpole", cwd=tmp_path)
    assert proc.returncode == 0 and "lightning_accelrl.algos.PPO" in proc.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["fit", "--recipe", "ppo-cartpol"], "unknown recipe 'ppo-cartpol'. Did you mean ppo-cartpole"),
        (["fit", "--recipe", "ppo-cartpole", "--data.env", "CartPol-v1"], "unknown env id 'CartPol-v1'"),
        (["fit", "--recipe", "ppo-cartpole", "--model.init_args.lr", "0"], "lr must be > 0"),
        (["fit", "--recipe", "ppo-cartpole", "--data.num_envs", "0"], "num_envs must be >= 1"),
        (
            ["fit", "--recipe", "ppo-cartpole", "--data.num_env", "4"],
            "unrecognized arguments: --data.num_env",
        ),
        (["fit", "--recipe", "ppo-cartpole", "--model.init_args.lrr", "3"], "Option 'lrr' is not accepted"),
        (["fit", "--recipe", "ppo-cartpole", "--data.total_env_steps", "many"], "data.total_env_steps"),
        (["fit", "--config", "missing.yaml"], "config file 'missing.yaml' not found"),
        (["fit", "--config", "."], "config file '.' is not a file"),
        (["evaluate", "--ckpt", "missing.ckpt"], "checkpoint 'missing.ckpt' not found"),
        (["evaluate", "--ckpt", "x.ckpt", "--episodes", "0"], "--episodes must be >= 1"),
        (["evaluate", "--ckpt", "x.ckpt", "--num-envs", "0"], "--num-envs must be >= 1"),
        (
            ["fit", "--recipe", "ppo-cartpole", "--data.env_kwargs", '{"bogus": 1}'],
            "data.env_kwargs: CartPole-v1 does not accept ['bogus']",
        ),
        (["fit", "--recipe", "ppo-cartpole", "--data.num_envs", "1000000000000"], "envs need at least"),
        (
            [
                "fit",
                "--recipe",
                "ppo-cartpole",
                "--data.num_envs",
                "1000000",
                "--data.vectorization",
                "async",
            ],
            "env processes need",
        ),
        (["train"], "unknown command 'train'"),
        (
            ["fit", "--recipe", "dqn-cartpole", "--trainer.gradient_clip_val", "1.0"],
            "Trainer(gradient_clip_val=1.0) does not apply: the algorithms clip their own gradients: set "
            "--model.init_args.max_grad_norm instead",
        ),
        (
            ["fit", "--recipe", "ppo-cartpole", "--trainer.accumulate_grad_batches", "2"],
            "Trainer(accumulate_grad_batches=2) does not apply: each training batch is one update",
        ),
        (
            ["fit", "--recipe", "ppo-cartpole", "--trainer.precision", "64-true"],
            "precision '64-true' is not supp",
        ),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path, args: list[str], fragment: str) -> None:
    assert_one_line_error(accelrl(*args, cwd=tmp_path), fragment)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"model: [unclosed\n", "is not valid YAML at line 2, column 1"),
        (b"- trainer\n- model\n", "holds a list, not a mapping of sections"),
        (b"root:x:0:0:root:/root:/bin/bash\n", "holds plain text, not a mapping of sections"),
        (b"\x7fELF\x02\x01\x01\x00\xff\xfe", "is not a text file"),
    ],
)
def test_a_config_that_is_not_a_yaml_mapping_is_one_line(
    tmp_path: Path, content: bytes, fragment: str
) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(content)
    assert_one_line_error(
        accelrl("fit", "--config", str(config), cwd=tmp_path), f"config file '{config}' {fragment}"
    )


def test_corrupt_checkpoint_is_reported_and_left_intact(tmp_path: Path) -> None:
    bad = tmp_path / "bad.ckpt"
    payload = b"PK\x03\x04 this is not a checkpoint" * 10
    bad.write_bytes(payload)
    assert_one_line_error(accelrl("evaluate", "--ckpt", str(bad), cwd=tmp_path), "unreadable or corrupt")
    proc = accelrl("fit", "--recipe", "ppo-cartpole", "--ckpt_path", str(bad), *QUIET, cwd=tmp_path)
    assert_one_line_error(proc, "unreadable or corrupt")
    assert bad.read_bytes() == payload


def _summary(proc: subprocess.CompletedProcess, cwd: Path) -> tuple[Path, dict]:
    assert proc.returncode == 0, proc.stderr[-3000:]
    last = proc.stdout.strip().splitlines()[-1]
    assert last.startswith("summary: "), proc.stdout[-2000:]
    path = cwd / last.removeprefix("summary: ")
    return path, json.loads(path.read_text())


def test_fit_writes_summary_and_checkpoint_then_evaluate_and_resume(tmp_path: Path) -> None:
    budget = ["--data.total_env_steps", "4096", "--data.updates_per_epoch", "4"]  # 16 updates of 16x16 steps
    path, summary = _summary(
        accelrl("fit", "--recipe", "ppo-cartpole", *budget, *QUIET, cwd=tmp_path), tmp_path
    )
    for key in ("env_steps", "episodes", "episode_return_mean", "wall_time_s", "env_steps_per_s"):
        assert key in summary
    assert summary["env_steps"] == 4096 and summary["updates"] == 16 and summary["policy_lag_max"] == 0
    assert summary["episodes"] > 0 and summary["episode_return_mean"] > 0
    run_dir = path.parent
    assert (run_dir / "metrics.csv").is_file() and list(run_dir.glob("events.out.tfevents.*"))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert ckpt.is_file()

    proc = accelrl("evaluate", "--ckpt", str(ckpt), "--episodes", "5", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["episodes"] == 5 and len(result["returns"]) == 5
    assert result["return_mean"] == pytest.approx(sum(result["returns"]) / 5, abs=1e-3)

    more = ["--data.total_env_steps", "8192", "--data.updates_per_epoch", "4", "--ckpt_path", str(ckpt)]
    _, resumed = _summary(accelrl("fit", "--recipe", "ppo-cartpole", *more, *QUIET, cwd=tmp_path), tmp_path)
    assert resumed["env_steps"] == 8192 and resumed["updates"] == 32  # counters continue from the checkpoint
    assert resumed["wall_time_s"] > summary["wall_time_s"]

    proc = accelrl("fit", "--recipe", "a2c-cartpole", "--ckpt_path", str(ckpt), *QUIET, cwd=tmp_path)
    assert_one_line_error(proc, "written by PPO")


def test_ckpt_path_last_resumes_the_runs_newest_last_checkpoint(tmp_path: Path) -> None:
    """Lightning's ``ckpt_path="last"`` looks only in the new run's empty ``version_N`` and starts afresh; here it
    resumes from the run's newest ``last.ckpt`` (a config whose budget was raised), or stops in one line."""
    recipe = (Path(__file__).parents[2] / "lightning_accelrl" / "recipes" / "ppo-cartpole.yaml").read_text()
    config = tmp_path / "my.yaml"
    config.write_text(recipe.replace("total_env_steps: 100000", "total_env_steps: 2048"))
    _, first = _summary(accelrl("fit", "--config", str(config), *QUIET, cwd=tmp_path), tmp_path)
    assert first["env_steps"] == 2048
    config.write_text(recipe.replace("total_env_steps: 100000", "total_env_steps: 4096"))
    proc = accelrl("fit", "--config", str(config), "--ckpt_path", "last", *QUIET, cwd=tmp_path)
    path, resumed = _summary(proc, tmp_path)
    ckpt = "runs/ppo-cartpole/version_0/checkpoints/last.ckpt"
    assert f"accelrl: resuming from {ckpt}" in proc.stderr
    assert resumed["env_steps"] == 4096 and path.parent.name == "version_1"
    saved = (path.parent / "config.yaml").read_text()  # what `accelrl plot` follows to join the two parts
    assert f"ckpt_path: {ckpt}" in saved

    changed = ["--model.init_args.lr", "0.01", "--ckpt_path", "last"]  # another run's name: nothing to resume
    proc = accelrl("fit", "--config", str(config), *changed, *QUIET, cwd=tmp_path)
    assert_one_line_error(proc, "--ckpt_path last: no runs/ppo-cartpole+model.lr=0.01/version_*")


def test_ckpt_path_last_is_left_to_lightning_for_a_fixed_checkpoint_folder() -> None:
    """A config's ModelCheckpoint with a fixed ``dirpath`` has its ``last.ckpt`` where Lightning's ``last`` looks."""
    from lightning_accelrl.lightning_cli import _fixed_checkpoint_dir, _run_folder

    checkpoint = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": "ckpts"},
    }
    assert _fixed_checkpoint_dir({"callbacks": [{"class_path": "x.Other"}, checkpoint]})
    assert not _fixed_checkpoint_dir({"callbacks": [{**checkpoint, "init_args": {"save_last": True}}]})
    assert not _fixed_checkpoint_dir({})
    csv = {
        "class_path": "lightning.pytorch.loggers.CSVLogger",
        "init_args": {"save_dir": "runs", "name": "a"},
    }
    assert _run_folder({"logger": [{"class_path": "x.Plain", "init_args": {}}, csv]}) == Path("runs/a")
    assert _run_folder({"logger": True}) is None


def test_config_classes_that_cannot_be_built_are_one_line_errors(tmp_path: Path) -> None:
    """The user's own logger or callback: a missing package or argument names the class and the cause."""
    (tmp_path / "my_loggers.py").write_text(
        "from lightning.pytorch.loggers import CSVLogger\n\n"
        "class FancyLogger(CSVLogger):\n"
        "    def __init__(self, save_dir: str = 'runs') -> None:\n"
        "        raise ModuleNotFoundError(\"Requirement 'fancylog' not met. HINT: pip install fancylog\")\n"
    )
    budget = ["--data.total_env_steps", "512", *QUIET]
    proc = accelrl(
        "fit", "--recipe", "ppo-cartpole", "--trainer.logger", "my_loggers.FancyLogger", *budget, cwd=tmp_path
    )
    assert_one_line_error(
        proc,
        "my_loggers.FancyLogger from the config cannot be built: ModuleNotFoundError: Requirement 'fancylog'",
    )
    stopping = "--trainer.callbacks+=lightning.pytorch.callbacks.EarlyStopping"
    proc = accelrl("fit", "--recipe", "ppo-cartpole", stopping, *budget, cwd=tmp_path)
    assert_one_line_error(
        proc,
        "trainer.callbacks: lightning.pytorch.callbacks.EarlyStopping: the following arguments are required",
    )


def test_fit_in_bf16_mixed_prints_no_lightning_warning(tmp_path: Path) -> None:
    # Lightning's model summary warns under bf16-mixed that it counts 32 bits a parameter: true for our fp32
    # weights, so the CLI keeps it off the user's screen (the summary itself is printed)
    budget = ["--data.total_env_steps", "512", "--data.updates_per_epoch", "2"]
    proc = accelrl(
        "fit", "--recipe", "ppo-cartpole", *budget, "--trainer.precision", "bf16-mixed",
        "--trainer.enable_progress_bar", "false", cwd=tmp_path,
    )  # fmt: skip
    _summary(proc, tmp_path)
    assert "Total params" in proc.stdout, proc.stdout[-2000:]
    assert "Warning" not in proc.stderr and "model summary" not in proc.stderr, proc.stderr[-2000:]
    assert "litlogger" not in proc.stderr + proc.stdout  # Lightning's advertisement at every Trainer start


def test_fit_with_ddp_spawn_prints_the_summary_line(tmp_path: Path) -> None:
    # ddp_spawn runs the fit in spawned workers: the launching process prints the file they wrote
    budget = ["--data.total_env_steps", "1024", "--data.updates_per_epoch", "2", "--data.num_envs", "4"]
    ddp = ["--trainer.strategy", "ddp_spawn", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    path, summary = _summary(
        accelrl("fit", "--recipe", "ppo-cartpole", *budget, *ddp, *QUIET, cwd=tmp_path), tmp_path
    )
    assert summary["world_size"] == 2 and summary["env_steps"] == 1024
    assert path.parent.name == "version_0" and (path.parent / "metrics.csv").is_file()


def test_fast_dev_run_writes_no_summary(tmp_path: Path) -> None:
    # a smoke test writes nothing, as Lightning's loggers and checkpoints under fast_dev_run; nor does it name
    # a summary.json an earlier run left in the working directory
    (tmp_path / "summary.json").write_text("{}")
    proc = accelrl("fit", "--recipe", "ppo-cartpole", "--trainer.fast_dev_run", "2", *QUIET, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "summary:" not in proc.stdout
    assert list(tmp_path.rglob("summary.json")) == [tmp_path / "summary.json"]
    assert (tmp_path / "summary.json").read_text() == "{}" and not list(tmp_path.rglob("*.ckpt"))
