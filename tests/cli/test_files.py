"""Files the CLI writes: a full disk is one line naming the path, dead writers' temp files are swept,
summary.json is durable; the machine-capacity checks of ``num_envs``."""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_accelrl import atomic, preflight
from lightning_accelrl.atomic import atomic_write, sweep_stale_temp_files
from lightning_accelrl.checkpoint_io import AtomicCheckpointIO, atomic_torch_save
from lightning_accelrl.errors import ConfigError


class _FullDisk:
    """``os.fdopen`` whose files accept ``room`` bytes, then fail as a full disk does (ENOSPC)."""

    def __init__(self, room: int) -> None:
        self.room = room
        self.real = os.fdopen

    def __call__(self, fd: int, mode: str = "r", *args, **kwargs):  # noqa: ANN002, ANN003
        file = self.real(fd, mode, *args, **kwargs)
        disk = self

        class Limited:
            def __getattr__(self, name: str):  # noqa: ANN204
                return getattr(file, name)

            def __enter__(self):  # noqa: ANN204
                return self

            def __exit__(self, *exc: object) -> None:
                file.close()

            def write(self, data: bytes) -> int:
                if len(data) > disk.room:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                disk.room -= len(data)
                return file.write(data)

        return Limited()


@pytest.mark.parametrize("room", [0, 100, 4000])
def test_full_disk_while_writing_a_checkpoint_is_one_line_and_keeps_the_old_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, room: int
) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint({"k": 1, "w": torch.zeros(10)}, path)
    monkeypatch.setattr(atomic.os, "fdopen", _FullDisk(room))
    with pytest.raises(ConfigError) as err:
        AtomicCheckpointIO().save_checkpoint({"k": 2, "w": torch.zeros(100_000)}, path)
    assert str(err.value) == f"no space left on device: {path}"
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["k"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left


def test_full_disk_while_writing_summary_json_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(atomic.os, "fdopen", _FullDisk(10))
    target = tmp_path / "summary.json"
    with (
        pytest.raises(ConfigError, match="^no space left on device: .*summary.json$"),
        atomic_write(target) as f,
    ):
        f.write(json.dumps({"x": list(range(100))}).encode())


def test_full_disk_when_creating_the_temp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def full(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", full)
    with pytest.raises(ConfigError, match="no space left on device"):
        atomic_torch_save({"k": 1}, tmp_path / "x.ckpt")


def test_other_write_errors_keep_their_own_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(atomic.tempfile, "mkstemp", broken)
    with pytest.raises(OSError, match="Input/output error"):
        atomic_torch_save({"k": 1}, tmp_path / "x.ckpt")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_files_of_dead_writers_are_swept_and_live_ones_kept(tmp_path: Path) -> None:
    host = atomic._host()
    dead = tmp_path / f".last.ckpt.{_dead_pid()}@{host}.abc123.tmp"
    live = tmp_path / f".last.ckpt.{os.getppid()}@{host}.def456.tmp"  # the pytest runner's parent: alive
    other_host = tmp_path / f".last.ckpt.{_dead_pid()}@not-{host}.ghi789.tmp"
    unrelated = tmp_path / "notes.tmp"
    for p in (dead, live, other_host, unrelated):
        p.write_bytes(b"x" * 100)
    atomic_torch_save({"k": 1}, tmp_path / "last.ckpt")  # any atomic write into the directory sweeps it
    assert not dead.exists()
    assert live.exists() and other_host.exists() and unrelated.exists()
    assert sweep_stale_temp_files(tmp_path) == []


def test_a_killed_writer_leaves_a_temp_file_the_next_save_removes(tmp_path: Path) -> None:
    code = (
        "import os, torch\n"
        "from lightning_accelrl.atomic import atomic_write\n"
        f"with atomic_write({str(tmp_path / 'last.ckpt')!r}) as f:\n"
        "    f.write(b'half a checkpoint')\n"
        "    f.flush()\n"
        "    os._exit(9)\n"  # dies mid-write, as kill -9 would
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 9
    assert len(list(tmp_path.glob(".last.ckpt.*.tmp"))) == 1
    AtomicCheckpointIO().save_checkpoint({"k": 2}, tmp_path / "last.ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_atomic_write_fsyncs_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[int] = []
    real = os.fsync
    monkeypatch.setattr(atomic.os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    with atomic_write(tmp_path / "summary.json") as file:
        file.write(b"{}")
    assert len(synced) == 2  # the file before the rename, the directory after it
    assert (tmp_path / "summary.json").read_bytes() == b"{}"


# ----- num_envs the machine can hold ---------------------------------------------------------------------------------
def test_num_envs_beyond_memory_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "available_memory", lambda: 1 << 30)  # 1 GiB
    preflight.check_num_envs(1000, in_processes=False)  # 4 MiB of small envs
    preflight.check_num_envs(30, in_processes=True)  # 960 MiB of env processes
    with pytest.raises(
        ConfigError, match=r"40 env processes need at least 1.2 GiB of memory \(32 MiB each\)"
    ):
        preflight.check_num_envs(40, in_processes=True)
    with pytest.raises(ConfigError, match="1,000,000 envs need at least"):
        preflight.check_num_envs(1_000_000, in_processes=False)


def test_env_processes_beyond_the_open_file_limit_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(preflight, "available_memory", lambda: 1 << 50)
    monkeypatch.setattr(resource, "getrlimit", lambda which: (1024, 4096))
    preflight.check_num_envs(192, in_processes=True)  # 768 fds + 256 reserved
    with pytest.raises(ConfigError, match=r"limit \(ulimit -n\) is 1,024: use at most 192"):
        preflight.check_num_envs(193, in_processes=True)
    preflight.check_num_envs(100_000, in_processes=False)  # in-process envs hold no file descriptors


def test_num_envs_counts_sampler_processes_and_local_ranks(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, bool]] = []
    monkeypatch.setattr(preflight, "check_num_envs", lambda total, procs: seen.append((total, procs)))
    data = {"env": "CartPole-v1", "num_envs": 8, "sampler": "async", "num_sampler_procs": 3}
    preflight.check_data(data, {"devices": 2})
    preflight.check_data({**data, "sampler": "sync", "vectorization": "async"}, {"devices": "auto"})
    assert seen == [(48, False), (8, True)]


@pytest.fixture
def tiny_tmpfs(tmp_path: Path):  # noqa: ANN201
    """A 32 KiB tmpfs (needs mount rights, e.g. root in a container; skipped elsewhere)."""
    mount = tmp_path / "tiny"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(mount)], capture_output=True, check=False
    )
    if proc.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_really_full_disk_is_one_line_and_leaves_nothing(tiny_tmpfs: Path) -> None:
    path = tiny_tmpfs / "checkpoints" / "last.ckpt"
    atomic_torch_save({"w": torch.zeros(1000)}, path)  # 4 KB: fits
    with pytest.raises(ConfigError) as err:
        atomic_torch_save({"w": torch.zeros(100_000)}, path)  # 400 KB: does not
    assert str(err.value) == f"no space left on device: {path}"
    assert torch.load(path, weights_only=True)["w"].shape == (1000,)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]


def test_fit_on_a_full_disk_is_one_line(tiny_tmpfs: Path, tmp_path: Path) -> None:
    from test_cli import assert_one_line_error

    budget = ["--data.total_env_steps", "512", "--data.updates_per_epoch", "1", "--data.num_envs", "4"]
    checkpoints = ["--trainer.callbacks+=ModelCheckpoint", "--trainer.callbacks.dirpath", str(tiny_tmpfs)]
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "lightning_accelrl.cli",
            "fit",
            "--recipe",
            "ppo-cartpole",
            *budget,
            *checkpoints,
        ]
        + ["--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert_one_line_error(proc, f"no space left on device: {tiny_tmpfs}/epoch=")
    assert list(tiny_tmpfs.iterdir()) == []  # no torn checkpoint, no temp file
