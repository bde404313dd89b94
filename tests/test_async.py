"""Asynchronous sampling: V-trace, shared weights, the async runner (APPO, DQN), faults, shutdown, DDP DQN.

Runs that start sampler processes happen in a script started with ``sys.executable`` in its own session, so
that its processes can be found (and any leftover killed) by process group, and ``/dev/shm`` is compared
before and after.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from process_helpers import group_alive, run_in_own_group, shm_segments

from lightning_accelrl.algos.appo import vtrace
from lightning_accelrl.algos.returns import gae
from lightning_accelrl.data.shared_weights import SharedWeights
from lightning_accelrl.data.supervision import sampler_stream, stream_seed

# ----- V-trace -------------------------------------------------------------------------------------------------


def test_vtrace_matches_a_hand_computation() -> None:
    # T = 3, one env, gamma 0.5, lambda 1, clips 1: rho = (2, 0.5, 1) -> clipped (1, 0.5, 1), c = (1, 0.5, 1)
    log_rho = torch.log(torch.tensor([[2.0], [0.5], [1.0]]))
    r = torch.tensor([[1.0], [2.0], [3.0]])
    v = torch.tensor([[0.5], [1.0], [1.5]])
    nv = torch.tensor([[1.0], [1.5], [2.0]])
    no = torch.zeros(3, 1, dtype=torch.bool)
    vs, adv = vtrace(log_rho, r, v, nv, no, no, gamma=0.5)
    d = [1 * (1 + 0.5 * 1.0 - 0.5), 0.5 * (2 + 0.5 * 1.5 - 1.0), 1 * (3 + 0.5 * 2.0 - 1.5)]  # 1.0, 0.875, 2.5
    a2 = d[2]
    a1 = d[1] + 0.5 * 0.5 * a2
    a0 = d[0] + 0.5 * 1.0 * a1
    torch.testing.assert_close(vs.squeeze(-1), torch.tensor([0.5 + a0, 1.0 + a1, 1.5 + a2]))
    vs1, vs2 = 1.0 + a1, 1.5 + a2
    expected = [1 * (1 + 0.5 * vs1 - 0.5), 0.5 * (2 + 0.5 * vs2 - 1.0), 1 * (3 + 0.5 * 2.0 - 1.5)]
    torch.testing.assert_close(adv.squeeze(-1), torch.tensor(expected))
    # without the importance weight (APPO's surrogate carries it)
    _, adv_plain = vtrace(log_rho, r, v, nv, no, no, gamma=0.5, pg_rho_clip=None)
    torch.testing.assert_close(adv_plain.squeeze(-1)[1], torch.tensor(2 + 0.5 * vs2 - 1.0))


@pytest.mark.parametrize("lmbda", [1.0, 0.8])
def test_on_policy_vtrace_equals_gae_returns(lmbda: float) -> None:
    T, B = 9, 4
    g = torch.Generator().manual_seed(0)
    r, v, nv = (torch.randn(T, B, 1, generator=g) for _ in range(3))
    done = torch.rand(T, B, 1, generator=g) < 0.3
    term = done & (torch.rand(T, B, 1, generator=g) < 0.5)
    nv[:-1] = torch.where(done[:-1], nv[:-1], v[1:])  # V(x_{t+1}) is the next step's value inside an episode
    vs, _ = vtrace(torch.zeros(T, B, 1), r, v, nv, done, term, 0.9, lmbda)
    _, returns = gae(r, v, nv, done, term, 0.9, lmbda)
    torch.testing.assert_close(vs, returns)
    if lmbda == 1.0:  # n-step bootstrapped return by hand for env 0, from t = 0 to the first episode end
        ret, disc = 0.0, 1.0
        for t in range(T):
            ret += disc * float(r[t, 0])
            disc *= 0.9
            if done[t, 0] or t == T - 1:
                ret += 0.0 if term[t, 0] else disc * float(nv[t, 0])
                break
        assert abs(float(vs[0, 0]) - ret) < 1e-5


def test_shared_weights_publish_and_fetch() -> None:
    src = torch.nn.Linear(3, 2)
    dst = torch.nn.Linear(3, 2)
    w = SharedWeights(list(src.parameters()))
    assert w.fetch(list(dst.parameters()), -1) == (0, 0)  # sequence 0: the zeros
    w.publish(list(src.parameters()), version=7)
    seq, version = w.fetch(list(dst.parameters()), 0)
    assert version == 7 and seq == 2
    for a, b in zip(src.parameters(), dst.parameters(), strict=True):
        assert torch.equal(a, b)
    assert w.fetch(list(dst.parameters()), seq) is None  # nothing new
    w.meta[0] += 1  # a writer in progress (odd sequence): readers keep their weights
    assert w.fetch(list(dst.parameters()), seq) is None


# ----- runs in a subprocess ------------------------------------------------------------------------------------
SCRIPT = textwrap.dedent(
    """
    import json, os, sys, time
    import torch
    torch.set_num_threads(1)
    import lightning as L
    from lightning_accelrl import APPO, DQN, ExperienceDataModule

    class Report(L.Callback):
        def __init__(self, out, target, kill_after):
            # kill_after: policy versions at which sampler process 0 gets `kill -9` (an int: once)
            kill_after = [] if kill_after is None else kill_after if isinstance(kill_after, list) else [kill_after]
            self.out, self.target, self.kill_after, self.reached, self.killed = out, target, kill_after, None, False
            self.pids = set()

        def on_train_batch_end(self, trainer, pl_module, *args):
            dm = trainer.datamodule
            tr = dm.tracker
            # kill only a live sampler: after a kill, the next one waits until the runner has replaced the
            # process (it checks every 0.5 s; a quiet machine makes 40 updates faster than that)
            alive = not dm.closed and dm.source.procs[0].exitcode is None
            if self.kill_after and pl_module.policy_version >= self.kill_after[0] and alive:
                self.kill_after.pop(0)
                pid = dm.source.procs[0].pid
                self.pids |= {p.pid for p in dm.source.procs} | {dm.source.server.pid}
                with open(self.out + ".pids", "w") as f:
                    json.dump(sorted(self.pids), f)
                os.kill(pid, 9)
                self.killed = time.time()
                with open(self.out + ".killed", "w") as f:
                    f.write(str(self.killed))
            if self.target and len(tr.recent_returns) == tr.recent_returns.maxlen:
                mean = sum(tr.recent_returns) / len(tr.recent_returns)
                if mean >= self.target and self.reached is None:
                    self.reached = {"wall_time_s": dm.wall_time, "env_steps": dm.env_steps, "mean": mean}
                    trainer.should_stop = True

    def main():
        cfg = json.loads(sys.argv[1])
        out = sys.argv[2]
        L.seed_everything(cfg.get("seed", 0), verbose=False)
        model = {"APPO": APPO, "DQN": DQN}[cfg["algo"]](**cfg["model"])
        dm = ExperienceDataModule(**cfg["data"])
        rep = Report(out, cfg.get("target"), cfg.get("kill_after"))
        trainer = L.Trainer(
            accelerator="cpu", max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, log_every_n_steps=50, callbacks=[rep],
        )
        trainer.fit(model, datamodule=dm)
        tr = dm.tracker
        metric = trainer.callback_metrics.get("async/sampler_restarts")
        with open(out, "w") as f:
            json.dump({
                "reached": rep.reached, "env_steps": dm.env_steps, "updates": model.policy_version,
                "final_mean": sum(tr.recent_returns) / max(1, len(tr.recent_returns)),
                "lags": [lag for lag, n in sorted(dm.lags.histogram.items()) for _ in range(n)], "restarts": dm.source.restarts,
                "restarts_metric": None if metric is None else float(metric),
                "returns": list(tr.recent_returns), "scores": list(tr.recent_scores),
            }, f)

    if __name__ == "__main__":
        main()
    """
)


def run_script(tmp_path: Path, cfg: dict, timeout: float = 200) -> tuple[int, str, dict | None, float]:
    script = tmp_path / "run_async.py"
    script.write_text(SCRIPT)
    out = tmp_path / "result.json"
    shm_before = shm_segments()
    cmd = [sys.executable, str(script), json.dumps(cfg), str(out)]
    code, text, took = run_in_own_group(cmd, tmp_path, timeout, "async run")
    assert shm_segments() - shm_before == set(), "shared-memory segments were left in /dev/shm"
    result = json.loads(out.read_text()) if out.exists() else None
    return code, text, result, took


APPO_CFG = {
    "algo": "APPO",
    # PPO-cartpole's hyperparameters (the ppo-cartpole recipe), 2 sampler processes x 16 envs, T = 16
    "model": {"lr": 2e-3, "gamma": 0.98, "gae_lambda": 0.8, "update_epochs": 10, "minibatch_size": 256},
    "data": {
        "env": "CartPole-v1",
        "num_envs": 16,
        "rollout_steps": 16,
        "total_env_steps": 150_000,
        "sampler": "async",
        "num_sampler_procs": 2,
        "async_queue_size": 1,
        "seed": 0,
    },
    "target": 475,
}


@pytest.mark.slow
def test_async_appo_reaches_475_on_cartpole(tmp_path: Path) -> None:
    # Budget 150k env steps; measured (seed 0, busy 2-core machine): 475 at ~65k env steps, ~10-20 s.
    code, text, result, _ = run_script(tmp_path, APPO_CFG, timeout=200)
    assert code == 0, text[-3000:]
    assert result["reached"] is not None, result["final_mean"]
    assert result["reached"]["mean"] >= 475
    lags = result["lags"]
    assert max(lags) >= 1 and max(lags) <= 4  # really asynchronous, and the queue bounds the lag


def test_sampler_processes_get_distinct_torch_seeds() -> None:
    # forked samplers inherit the learner's generator: each reseeds from its env stream, so the ε-greedy and
    # action-sampling draws differ between samplers (and ranks, and restarts) yet follow the run's seed
    streams = [sampler_stream(r, 3, i, k, world_size=2) for r in range(2) for i in range(3) for k in range(3)]
    seeds = {stream_seed(0, s) for s in streams} | {stream_seed(0, -1 - r) for r in range(2)}  # + table seeds
    assert len(seeds) == len(streams) + 2
    assert stream_seed(1, 0) != stream_seed(0, 0)
    draws = []
    for s in streams[:2]:
        torch.manual_seed(stream_seed(0, s))
        draws.append(torch.rand(16))
    assert not torch.equal(draws[0], draws[1])


# a small async DQN run: 2 sampler processes x 2 envs, 3,000 env steps, ~350 updates (also tests/test_async_faults.py)
SMALL_DQN_CFG = {
    "algo": "DQN",
    "model": {"hidden": [16]},
    "data": {
        "env": "CartPole-v1",
        "num_envs": 2,
        "total_env_steps": 3000,
        "batch_size": 32,
        "replay_ratio": 4.0,
        "learning_starts": 200,
        "sampler": "async",
        "num_sampler_procs": 2,
        "weight_sync_every": 2,
    },
}


def test_async_atari_episodes_carry_their_game_scores(tmp_path: Path) -> None:
    # sampler processes hand (return, length, score) to the learner: the unclipped Space Invaders score arrives
    # with each clipped return (episodes cut at 400 frames = 100 agent steps, so several end in 1,200 env steps)
    cfg = {
        "algo": "APPO",
        "model": {"update_epochs": 1, "minibatch_size": 64},
        "data": {
            "env": "ALE/SpaceInvaders-v5",
            "env_kwargs": {"max_num_frames_per_episode": 400},
            "num_envs": 2,
            "rollout_steps": 16,
            "total_env_steps": 1200,
            "sampler": "async",
            "num_sampler_procs": 2,
            "seed": 0,
        },
    }
    code, text, result, _ = run_script(tmp_path, cfg, timeout=200)
    assert code == 0, text[-3000:]
    returns, scores = result["returns"], result["scores"]
    assert len(returns) >= 8 and len(scores) == len(returns)
    assert all(r <= s for r, s in zip(returns, scores, strict=True)) and sum(scores) > sum(returns)


def test_async_run_finishes_its_budget_cleanly(tmp_path: Path) -> None:
    code, text, result, _ = run_script(tmp_path, SMALL_DQN_CFG, timeout=120)
    assert code == 0, text[-3000:]
    # the budget stops the samplers; one in-flight vector step per sampler process may still land
    assert 3000 <= result["env_steps"] < 3000 + 2 * 2
    # the limiter holds the ratio: (inserted - learning_starts) * ratio / batch updates, up to the error band
    expected = (3000 - 200) * 4.0 / 32
    assert abs(result["updates"] - expected) <= 32 / 4 + 2, result["updates"]
    # the samplers act with fresh weights: weight_sync_every + one in flight, typically. A sampler the OS does
    # not run for a while (load average ~10 on 2 cores measured a max of 7) falls further behind meanwhile, so
    # the max only shows that weights keep arriving (never fetching would reach ~350, the number of updates).
    lags = sorted(result["lags"])
    assert lags[len(lags) // 2] <= 2 + 2 and lags[-1] <= 40, lags[-20:]


def test_killed_sampler_fails_the_run_fast_with_a_clear_message(tmp_path: Path) -> None:
    cfg = json.loads(json.dumps(APPO_CFG))
    cfg["data"]["total_env_steps"] = 10_000_000
    cfg["kill_after"] = 5
    cfg.pop("target")
    code, text, result, _ = run_script(tmp_path, cfg, timeout=120)
    ended = time.time()
    killed = float((tmp_path / "result.json.killed").read_text())
    assert code != 0 and result is None
    assert ended - killed < 10, ended - killed
    assert "SamplerProcessError: async sampler process 0 of rank 0" in text, text[-3000:]
    assert "was killed by signal 9" in text
    for pid in json.loads((tmp_path / "result.json.pids").read_text()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


# Started like a command typed in a terminal: SIGINT at its default action. A background job of a
# non-interactive shell (`pytest ... &` in a script, as full-suite runs often are) starts with SIGINT *ignored*,
# children inherit that, and Python then installs no KeyboardInterrupt handler: Ctrl-C could not stop the run at
# all. That, not the load, was the intermittent "does not exit" of this test inside the full suite (issue 6).
_AS_FROM_A_TERMINAL = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
    "os.execv(sys.executable, [sys.executable] + sys.argv[1:])"
)


def _ignores_sigint(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigIgn:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))
    return False


def test_interrupt_leaves_no_process_or_shared_memory(tmp_path: Path) -> None:
    """Ctrl-C (SIGINT to the whole foreground group) stops the run within a bound, and nothing is left."""
    cfg = json.loads(json.dumps(APPO_CFG))
    cfg["data"]["total_env_steps"] = 10_000_000
    cfg.pop("target")
    script = tmp_path / "run_async.py"
    script.write_text(SCRIPT)
    shm_before = shm_segments()
    proc = subprocess.Popen(
        [sys.executable, "-c", _AS_FROM_A_TERMINAL, str(script), json.dumps(cfg), str(tmp_path / "r.json")],
        cwd=tmp_path,
        env=dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    took = None
    try:
        children: list[int] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(children) < 3:  # server + 2 samplers
            time.sleep(0.2)
            out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
            children = [int(x) for x in out.split()]
        assert len(children) >= 3, children
        assert not _ignores_sigint(proc.pid)  # the learner can be interrupted at all
        time.sleep(1.0)
        t0 = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches the whole foreground group
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=30)  # measured ~2 s (stop flag, server stop, joins), also under load
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        output = proc.communicate()[0].decode(errors="replace")
    assert took is not None and took < 30, f"no exit {took:.0f} s after Ctrl-C:\n{output[-3000:]}"
    assert proc.returncode != 0 and "Detected KeyboardInterrupt" in output, output[-3000:]
    assert "Traceback" not in output, output[-3000:]  # no child died of the KeyboardInterrupt
    deadline = time.monotonic() + 5
    while group_alive(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not group_alive(proc.pid), output[-3000:]
    assert shm_segments() - shm_before == set()


# ----- DDP: DQN, SAC and TD3 in replay mode keep identical parameters on 2 ranks -------------------------------------------
DDP_DQN = textwrap.dedent(
    """
    import os, sys
    import torch
    torch.set_num_threads(1)
    import lightning as L
    from lightning_accelrl import DQN, SAC, TD3, ExperienceDataModule

    def main():
        L.seed_everything(0, verbose=False)
        algo, env = sys.argv[3], "CartPole-v1"
        if algo == "DQN":
            model = DQN(hidden=(32, 32), target_update_period=20)
        else:  # continuous control: the actor's loss and (TD3) the delayed actor in every DDP backward
            model = {"SAC": SAC, "TD3": TD3}[algo](actor_hidden=(32,), critic_hidden=(32,))
            env = "Pendulum-v1"
        dm = ExperienceDataModule(
            env, num_envs=2, total_env_steps=2000, batch_size=32, replay_ratio=4.0, learning_starts=200,
            seed=3, sampler=sys.argv[2],
        )
        trainer = L.Trainer(
            strategy="ddp", devices=2, accelerator="cpu", logger=False, enable_checkpointing=False,
            enable_progress_bar=False, enable_model_summary=False, max_epochs=-1,
        )
        trainer.fit(model, datamodule=dm)
        flat = torch.cat([p.detach().flatten() for p in model.parameters()])
        torch.save({"params": flat, "updates": model.updates, "env_steps": dm.env_steps},
                   os.path.join(sys.argv[1], f"rank{trainer.global_rank}.pt"))

    if __name__ == "__main__":
        main()
    """
)


@pytest.mark.parametrize(
    ("algo", "sampler"), [("DQN", "sync"), ("DQN", "async"), ("SAC", "sync"), ("TD3", "async")]
)
def test_ddp_replay_algorithms_keep_identical_parameters(tmp_path: Path, algo: str, sampler: str) -> None:
    script = tmp_path / "ddp_dqn.py"
    script.write_text(DDP_DQN)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("LOCAL_RANK", None)
    env.pop("WORLD_SIZE", None)
    shm_before = shm_segments()
    cmd = [sys.executable, str(script), str(tmp_path), sampler, algo]
    code, text, _ = run_in_own_group(cmd, tmp_path, 180, f"DDP {algo} run", env=env, linger_s=10)
    assert code == 0, text[-4000:]
    assert shm_segments() - shm_before == set()
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert r0["updates"] == r1["updates"] > 0
    torch.testing.assert_close(r0["params"], r1["params"], rtol=0, atol=0)
