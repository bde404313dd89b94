"""Checkpoints are data: hostile files through the real CLI fail in one line and run nothing.

A pickle payload (``os.system`` in the pickle stream) and a checkpoint naming a callable that is not an
algorithm (``subprocess.Popen``, ``os.system``) as its algorithm and ``_class_path``, via ``accelrl evaluate``
and via ``accelrl fit --ckpt_path``: exit 2, one line, no traceback, and the marker file the payload would
create does not appear. Then what a real checkpoint may carry: another library version and options the
algorithm no longer takes (one warning line each), and a user's algorithm class (known only after ``--import``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from test_cli import QUIET, accelrl, assert_one_line_error

TINY = ["--data.total_env_steps", "512", "--data.updates_per_epoch", "1", "--data.num_envs", "4"]


class _Payload:
    """Pickles as ``os.system("touch MARKER")``: what a crafted checkpoint would run on a plain ``torch.load``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _pickle_payload_ckpt(tmp_path: Path, marker: Path) -> Path:
    path = tmp_path / "payload.ckpt"
    torch.save({"state_dict": {}, "accelrl": {"algorithm": "x"}, "payload": _Payload(marker)}, path)
    return path


def _callable_ckpt(tmp_path: Path, marker: Path, name: str) -> Path:
    path = tmp_path / "callable.ckpt"
    hparams = {"_class_path": name, "args": f"touch {marker}", "shell": True, "command": f"touch {marker}"}
    torch.save(
        {
            "state_dict": {},
            "accelrl": {"algorithm": name},
            "hyper_parameters": hparams,
            "datamodule_hyper_parameters": {"env": "CartPole-v1"},
        },
        path,
    )
    return path


def test_the_payload_would_run_on_a_plain_load(tmp_path: Path) -> None:
    """The control: the crafted file really is hostile (a weights_only=False load runs it)."""
    marker = tmp_path / "control"
    torch.load(_pickle_payload_ckpt(tmp_path, marker), weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("command", ["evaluate", "fit"])
def test_pickle_payload_checkpoint_runs_nothing(tmp_path: Path, command: str) -> None:
    marker = tmp_path / "pwned"
    ckpt = _pickle_payload_ckpt(tmp_path, marker)
    args = ["evaluate", "--ckpt", str(ckpt)] if command == "evaluate" else ["fit", "--recipe", "ppo-cartpole"]
    if command == "fit":
        args += ["--ckpt_path", str(ckpt), *QUIET]
    assert_one_line_error(accelrl(*args, cwd=tmp_path), "holds Python objects other than tensors")
    assert not marker.exists()


@pytest.mark.parametrize("name", ["subprocess.Popen", "os.system"])
@pytest.mark.parametrize("command", ["evaluate", "fit"])
def test_checkpoint_naming_a_non_algorithm_callable_runs_nothing(
    tmp_path: Path, command: str, name: str
) -> None:
    marker = tmp_path / "pwned"
    ckpt = _callable_ckpt(tmp_path, marker, name)
    if command == "evaluate":
        proc = accelrl("evaluate", "--ckpt", str(ckpt), cwd=tmp_path)
    else:
        proc = accelrl("fit", "--recipe", "ppo-cartpole", "--ckpt_path", str(ckpt), *QUIET, cwd=tmp_path)
    assert_one_line_error(proc, f"algorithm {name!r} is not a RLModule subclass")
    assert name in proc.stderr
    assert not marker.exists()


@pytest.mark.parametrize(
    ("command", "where"),
    [("evaluate", "algorithm"), ("evaluate", "network"), ("fit", "network"), ("evaluate", "env")],
)
def test_names_of_modules_that_are_not_loaded_are_never_imported(
    tmp_path: Path, trained: Path, command: str, where: str
) -> None:
    """``evil_mod`` (importable from the working directory) writes a marker when imported: it never is."""
    marker = tmp_path / "imported"
    (tmp_path / "evil_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Net: pass\n")
    ckpt = torch.load(trained, weights_only=True)
    if where == "algorithm":
        ckpt["accelrl"]["algorithm"] = ckpt["hyper_parameters"]["_class_path"] = "evil_mod.Net"
    elif where == "network":
        ckpt["hyper_parameters"]["network"] = {"class_path": "evil_mod.Net", "init_args": {}}
    else:
        ckpt["datamodule_hyper_parameters"]["env"] = "evil_mod:Fly-v0"
    forged = tmp_path / "forged.ckpt"
    torch.save(ckpt, forged)
    if command == "evaluate":
        proc = accelrl("evaluate", "--ckpt", str(forged), "--episodes", "1", cwd=tmp_path)
    else:
        proc = accelrl(
            "fit", "--recipe", "ppo-cartpole", *TINY, "--ckpt_path", str(forged), *QUIET, cwd=tmp_path
        )
    assert_one_line_error(proc, "--import evil_mod")
    assert not marker.exists()


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real PPO checkpoint from a 512-step run."""
    root = tmp_path_factory.mktemp("trained")
    proc = accelrl("fit", "--recipe", "ppo-cartpole", *TINY, *QUIET, cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return next(root.glob("runs/*/version_0/checkpoints/last.ckpt"))


def test_version_mismatch_and_dropped_options_are_one_warning_line_each(
    tmp_path: Path, trained: Path
) -> None:
    ckpt = torch.load(trained, weights_only=True)
    ckpt["accelrl"]["version"] = "0.0.1"
    ckpt["hyper_parameters"]["retired_option"] = 3
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    proc = accelrl("evaluate", "--ckpt", str(old), "--episodes", "2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    warnings = [ln for ln in proc.stderr.splitlines() if ln.startswith("accelrl: warning:")]
    assert len(warnings) == 2, proc.stderr
    assert "written by lightning_accelrl 0.0.1" in warnings[0]
    assert "PPO no longer accepts retired_option; ignored" in warnings[1]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["episodes"] == 2

    proc = accelrl("fit", "--recipe", "ppo-cartpole", *TINY, "--ckpt_path", str(old), *QUIET, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "PPO no longer accepts retired_option" in proc.stderr


def test_a_users_algorithm_is_known_after_import(tmp_path: Path, trained: Path) -> None:
    (tmp_path / "my_algos.py").write_text(
        "from lightning_accelrl.algos import PPO\n\n\nclass MyPPO(PPO):\n    pass\n"
    )
    ckpt = torch.load(trained, weights_only=True)
    ckpt["accelrl"]["algorithm"] = "my_algos.MyPPO"
    ckpt["hyper_parameters"]["_class_path"] = "my_algos.MyPPO"
    mine = tmp_path / "mine.ckpt"
    torch.save(ckpt, mine)
    proc = accelrl("evaluate", "--ckpt", str(mine), "--episodes", "1", cwd=tmp_path)
    assert_one_line_error(
        proc, "'my_algos.MyPPO' is not loaded: import its module first (e.g. --import my_algos)"
    )
    proc = accelrl("evaluate", "--ckpt", str(mine), "--episodes", "1", "--import", "my_algos", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["episodes"] == 1


def test_import_of_a_missing_module_is_one_line(tmp_path: Path) -> None:
    proc = accelrl("evaluate", "--ckpt", "x.ckpt", "--import", "no_such_module_xyz", cwd=tmp_path)
    assert_one_line_error(proc, "--import no_such_module_xyz: No module named 'no_such_module_xyz'")


def test_atomic_checkpoint_io_loads_data_only(tmp_path: Path) -> None:
    from lightning_accelrl.checkpoint_io import AtomicCheckpointIO
    from lightning_accelrl.errors import ConfigError

    marker = tmp_path / "pwned"
    io = AtomicCheckpointIO()
    with pytest.raises(ConfigError, match="holds Python objects"):
        io.load_checkpoint(_pickle_payload_ckpt(tmp_path, marker))
    with pytest.raises(ConfigError, match="data only"):
        io.load_checkpoint(_pickle_payload_ckpt(tmp_path, marker), weights_only=False)
    assert not marker.exists()
    io.save_checkpoint({"w": torch.ones(3)}, tmp_path / "ok.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "ok.ckpt")["w"], torch.ones(3))
