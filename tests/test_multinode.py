"""Two nodes on loopback: Lightning multi-node DDP (``num_nodes=2``, one process per node, gloo on CPU).

Each "node" is its own session started here, as on two machines: ``torchrun --nnodes 2 --node_rank r`` (the
torchelastic environment) for the training cases, Lightning's own variables (``MASTER_ADDR``, ``MASTER_PORT``,
``NODE_RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) for the ``accelrl fit`` runs whose node is killed. Each rank saves
what it saw with ``torch.save``; the test compares the nodes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import pytest
import torch
from process_helpers import QUIET_ENV, finish, free_port, shm_segments, start_groups, wait_gone
from rank_recording import with_tests_dir_on_path

SCRIPT = textwrap.dedent(
    """
    import os, sys
    from datetime import timedelta

    import torch
    torch.set_num_threads(1)
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy
    from lightning_accelrl import DQN, PPO, ExperienceDataModule
    from rank_recording import MemLogger, flat


    def table(dm):
        t = dm.source.table
        state, info = t.state_dict(), t.info()
        obs = t.storage.read(state["slots"])["observation"] if info["size"] else torch.zeros(1)
        return {
            "size": info["size"],
            "counters": [info[k] for k in ("inserts", "samples", "deletes", "next_key")],
            "keys": state["keys"].clone(),
            "obs_sum": float(obs.double().sum()),
            "env_steps": dm.source.env_steps,
        }


    class Record(L.Callback):
        def __init__(self, tables=False):
            self.tables, self.initial, self.local_episodes = tables, None, []
            self.saved = self.started = None

        def on_train_start(self, trainer, pl_module):
            self.initial = flat(pl_module)
            if self.tables:
                self.started = table(trainer.datamodule)

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            self.local_episodes.append(trainer.datamodule.tracker.episodes)

        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            if self.tables:
                self.saved = table(trainer.datamodule)


    def fit(model, dm, root=None, max_epochs=-1, ckpt_path=None, tables=False):
        L.seed_everything(0, verbose=False)
        rec, mem = Record(tables), MemLogger()
        callbacks = [rec]
        if root is not None:
            callbacks.append(ModelCheckpoint(dirpath=os.path.join(root, "ckpt"), save_last=True))
        trainer = L.Trainer(
            accelerator="cpu", devices=1, num_nodes=2, strategy=DDPStrategy(timeout=timedelta(seconds=60)),
            max_epochs=max_epochs, logger=mem, log_every_n_steps=1, enable_checkpointing=root is not None,
            enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks, default_root_dir=root,
        )
        trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
        return {
            "rank": trainer.global_rank,
            "node_rank": trainer.node_rank,
            "world_size": trainer.world_size,
            "params": flat(model),
            "initial": rec.initial,
            "local_env_steps": dm.source.env_steps,
            "local_episodes": rec.local_episodes,
            "logged_episodes": [row["episodes"] for row in mem.rows if "episodes" in row],
            "updates": dm.updates_done,
            "saved": rec.saved,
            "started": rec.started,
        }


    def replay_data(sampler="sync", **kwargs):
        args = dict(num_envs=4, total_env_steps=2000, batch_size=32, replay_ratio=2.0, learning_starts=200, seed=3)
        return ExperienceDataModule("CartPole-v1", sampler=sampler, num_sampler_procs=1, **{**args, **kwargs})


    def main():
        out = sys.argv[1]
        result = {"pid": os.getpid(), "pgid": os.getpgid(0)}
        ppo = PPO(update_epochs=2, minibatch_size=64, hidden=(16, 16))
        data = ExperienceDataModule("CartPole-v1", num_envs=4, rollout_steps=32, total_env_steps=2048, seed=3)
        result["ppo"] = fit(ppo, data)
        result["dqn"] = fit(DQN(hidden=(16, 16), target_update_period=20), replay_data())
        result["dqn_async"] = fit(DQN(hidden=(16, 16), target_update_period=20), replay_data("async"))
        # checkpoint after 2 epochs of 20 updates on 2 nodes, resume on 2 nodes for a third
        root = os.path.join(out, "resume")
        resumable = dict(total_env_steps=100_000, updates_per_epoch=20, replay_capacity=200, learning_starts=32)
        first = fit(DQN(hidden=(16,), target_update_period=10), replay_data(**resumable), root, 2, tables=True)
        ckpt = os.path.join(root, "ckpt", "last.ckpt")
        again = fit(DQN(hidden=(16,), target_update_period=10), replay_data(**resumable), root, 3, ckpt, True)
        result["resume"] = {"first": first, "again": again}
        torch.save(result, os.path.join(out, f"rank{first['rank']}.pt"))


    if __name__ == "__main__":
        main()
    """
)


def node_env(**extra: str) -> dict[str, str]:
    env = with_tests_dir_on_path(dict(os.environ, **QUIET_ENV, **extra))
    for name in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "NODE_RANK", "GROUP_RANK", "TORCHELASTIC_RUN_ID"):
        if name not in extra:
            env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory) -> dict[int, dict]:
    """``torchrun --nnodes 2`` on loopback, one worker per node, every training case in one launch."""
    tmp = tmp_path_factory.mktemp("multinode")
    script = tmp / "two_nodes.py"
    script.write_text(SCRIPT)
    port = str(free_port())
    commands = [
        [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
         "--master_addr", "127.0.0.1", "--master_port", port, "--nproc_per_node", "1", str(script), str(tmp)]
        for node in (0, 1)
    ]  # fmt: skip
    shm_before = shm_segments()
    procs = start_groups(commands, [node_env(), node_env()], tmp)
    outputs = finish(procs, 240, "two-node run")
    results = {}
    for node, proc in enumerate(procs):
        assert proc.returncode == 0, outputs[node][-4000:]
        results[node] = torch.load(tmp / f"rank{node}.pt", weights_only=False)
    # torchrun starts its worker in a session of its own: the worker's group (and its samplers) must be gone too
    pgids = [p.pid for p in procs] + [results[n]["pgid"] for n in (0, 1)]
    assert wait_gone(pgids, 10) == [], "\n".join(outputs)[-3000:]
    assert shm_segments() - shm_before == set()
    return results


@pytest.mark.parametrize("case", ["ppo", "dqn", "dqn_async"])
def test_nodes_train_identical_parameters(two_nodes, case: str) -> None:
    runs = {node: two_nodes[node][case] for node in (0, 1)}
    for node, r in runs.items():
        assert (r["rank"], r["node_rank"], r["world_size"]) == (node, node, 2)
    assert torch.equal(runs[0]["initial"], runs[1]["initial"])
    assert not torch.equal(runs[0]["params"], runs[0]["initial"])  # training changed them
    torch.testing.assert_close(runs[0]["params"], runs[1]["params"], rtol=0, atol=0)
    assert runs[0]["updates"] == runs[1]["updates"] > 0


BUDGETS = {"ppo": 2048, "dqn": 2000, "dqn_async": 2000}  # total_env_steps of the cases, 4 envs per rank


@pytest.mark.parametrize("case", ["ppo", "dqn", "dqn_async"])
def test_budget_is_counted_over_all_nodes(two_nodes, case: str) -> None:
    local = [two_nodes[node][case]["local_env_steps"] for node in (0, 1)]
    total = BUDGETS[case]
    assert total <= sum(local) < total + 2 * 4, local  # at most one vector step of 4 envs past the budget
    assert all(abs(steps - total / 2) <= 4 for steps in local), local  # each node ~half


@pytest.mark.parametrize("case", ["ppo", "dqn", "dqn_async"])
def test_episode_statistics_are_reduced_over_nodes(two_nodes, case: str) -> None:
    local = [two_nodes[node][case]["local_episodes"] for node in (0, 1)]
    logged = [two_nodes[node][case]["logged_episodes"] for node in (0, 1)]
    assert logged[0] == logged[1]  # both nodes log the same
    assert len(logged[0]) == len(local[0]) == len(local[1])
    total = [a + b for a, b in zip(local[0], local[1], strict=True)]
    assert min(local[0][-1], local[1][-1]) > 0
    if case == "dqn_async":  # the samplers finish episodes between the logging and the callback that counts
        assert max(local[0][-1], local[1][-1]) < logged[0][-1] <= total[-1]
    else:
        assert logged[0] == total


def test_resume_on_two_nodes_gives_each_node_its_own_table(two_nodes) -> None:
    """Checkpoint on 2 nodes, resume on 2 nodes: each rank's replay table is the one it saved (DQN, sync)."""
    saved = {node: two_nodes[node]["resume"]["first"]["saved"] for node in (0, 1)}
    started = {node: two_nodes[node]["resume"]["again"]["started"] for node in (0, 1)}
    assert saved[0]["size"] == saved[1]["size"] == 200  # full, evicting
    assert saved[0]["obs_sum"] != saved[1]["obs_sum"]  # the nodes' tables hold different transitions
    for node in (0, 1):
        s, t = saved[node], started[node]
        assert (t["size"], t["counters"], t["env_steps"], t["obs_sum"]) == (
            s["size"], s["counters"], s["env_steps"], s["obs_sum"]
        ), node  # fmt: skip
        assert torch.equal(t["keys"], s["keys"])
    again = [two_nodes[node]["resume"]["again"] for node in (0, 1)]
    assert again[0]["updates"] == again[1]["updates"] == 60  # 2 epochs restored, one more trained
    torch.testing.assert_close(again[0]["params"], again[1]["params"], rtol=0, atol=0)


# ----- a node dies: the other stops with one line --------------------------------------------------------------
class Node:
    """One ``accelrl fit`` node started with Lightning's variables, its output read as it comes."""

    def __init__(self, node: int, port: int, args: Sequence[str], cwd: Path) -> None:
        env = node_env(
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=str(port),
            WORLD_SIZE="2",
            NODE_RANK=str(node),
            LOCAL_RANK="0",
        )
        cmd = [sys.executable, "-m", "lightning_accelrl.cli", "fit", *args, "--trainer.num_nodes", "2"]
        self.proc = start_groups([cmd], [env], cwd)[0]
        self.lines: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in iter(self.proc.stdout.readline, b""):
            self.lines.append(line.decode(errors="replace"))

    def wait_for(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                pytest.fail(f"no {text!r} in the node's output:\n" + "".join(self.lines)[-3000:])
            time.sleep(0.1)


def lose_a_node(tmp: Path, victim: int, sig: int, args: Sequence[str]) -> tuple[int, str, float]:
    """Two nodes train; ``sig`` goes to every process of node ``victim`` 2 s into training. Returns the
    survivor's exit code, output and seconds from the signal to its exit; no process of either node may remain."""
    common = ["--trainer.accelerator", "cpu", "--trainer.devices", "1"]
    quiet = ["--trainer.logger", "false", "--trainer.enable_checkpointing", "false"]
    quiet += ["--trainer.enable_progress_bar", "false"]
    args = [*args, *common, *quiet, "--data.total_env_steps", "10000000"]
    port = free_port()
    nodes = [Node(node, port, args, tmp) for node in (0, 1)]
    try:
        nodes[0].wait_for("Total params", 150)  # rank 0's model summary: training starts
        time.sleep(2)
        os.killpg(nodes[victim].proc.pid, sig)
        t0 = time.monotonic()
        survivor = nodes[1 - victim]
        try:
            survivor.proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            pytest.fail("the surviving node did not stop:\n" + "".join(survivor.lines)[-3000:])
        took = time.monotonic() - t0
    finally:
        os.killpg(nodes[victim].proc.pid, signal.SIGKILL)  # also a stopped node
        nodes[victim].proc.wait()
    time.sleep(0.2)  # the reader thread takes the last lines
    output = "".join(survivor.lines)
    assert wait_gone([n.proc.pid for n in nodes], 5) == [], output[-3000:]
    return survivor.proc.returncode, output, took


LOST = "accelrl: error: rank {rank} lost the distributed run ("


def test_killed_node_stops_the_other_with_one_line(tmp_path: Path) -> None:
    """Node 0 (the master, with the rendezvous store) is killed; node 1 runs DQN with async samplers: it fails
    with one line within seconds (its peer's connections reset) and its samplers and table server stop."""
    shm_before = shm_segments()
    args = ["--recipe", "dqn-cartpole", "--trainer.strategy", "ddp", "--data.sampler", "async"]
    args += ["--data.num_sampler_procs", "1"]
    code, output, took = lose_a_node(tmp_path, 0, signal.SIGKILL, args)
    assert code == 1, output[-3000:]
    assert LOST.format(rank=1) in output and "Traceback" not in output, output[-3000:]
    assert took < 30, took  # measured 6-7 s with the 2 cores under a load of 9
    assert shm_segments() - shm_before == set()


@pytest.mark.slow
def test_stalled_node_stops_the_other_after_the_process_group_timeout(tmp_path: Path) -> None:
    """A node that stops answering without closing its connections (SIGSTOP: as a machine that froze or fell off
    the network) is found by the process group's timeout, here 10 s (Lightning's default: 30 min)."""
    timeout = ["--trainer.strategy", "lightning.pytorch.strategies.DDPStrategy"]
    timeout += ["--trainer.strategy.timeout", "0:00:10"]
    code, output, took = lose_a_node(tmp_path, 1, signal.SIGSTOP, ["--recipe", "ppo-cartpole", *timeout])
    assert code == 1, output[-3000:]
    assert LOST.format(rank=0) in output, output[-3000:]
    # gloo says "Timed out ..." from a collective, "Application timeout caused pair closure" from a barrier
    assert "Timed out" in output or "Application timeout" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    assert 10 <= took < 40, took


def test_lost_peer_line_names_the_failed_collective() -> None:
    """The CLI's line for a failed collective: gloo's message without its source location and advice."""
    import torch.distributed as dist

    from lightning_accelrl.cli import _lost_peer

    gloo = RuntimeError(
        "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error [127.0.0.1]:4626: "
        "Connection reset by peer. This is typically caused by a remote worker hanging or bugs in the application."
    )
    assert _lost_peer(gloo) == (
        "this rank lost the distributed run (RuntimeError: Read error [127.0.0.1]:4626: Connection reset by peer): "
        "another node or rank died or stopped answering; see its log"
    )
    wrapped = ValueError("while training")
    wrapped.__cause__ = dist.DistBackendError("NCCL communicator was aborted")
    assert "DistBackendError: NCCL communicator was aborted" in _lost_peer(wrapped)
    barrier = RuntimeError("Application timeout caused pair closure")  # gloo, from a barrier: no source path
    assert "RuntimeError: Application timeout caused pair closure" in _lost_peer(barrier)
    assert _lost_peer(RuntimeError("shape mismatch")) is None
