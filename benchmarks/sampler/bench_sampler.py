"""Sampler throughput on Atari (Pong, v5 protocol) and CartPole: ours vs the raw simulators and the peers.

Configurations, all in one process, interleaved (A B C ... A B C ...), several repeats, medians:

  a  raw ale_py AtariVectorEnv, random actions (the ceiling for our Atari path)
  b  our SyncSampler over AtariEnv, trivial policy (random actions from torch)
  c  our SyncSampler, Nature CNN policy on the CPU (one torch thread, as `accelrl fit`)
  d  our AlternatingSampler, Nature CNN policy on the CPU
  e  TorchRL: Collector over ParallelEnv of GymWrapper(Pong + Gymnasium's AtariPreprocessing + FrameStack), random policy
  f  Gymnasium AsyncVectorEnv + AtariPreprocessing + FrameStackObservation, random actions
  CartPole (64 envs): our SyncSampler with a trivial policy vs Gymnasium SyncVectorEnv alone.

Figures: env (agent) steps/s and frames/s (= steps x frame skip 4) of sampling only (no learning).
Goals: b >= 0.95 a; ours >= 2 e; CartPole ours >= 0.9 x SyncVectorEnv.

Run: ``python benchmarks/sampler/bench_sampler.py`` (``--repeats 5 --envs 8 32``; ``--no-write`` to leave
RESULTS.md alone). Writes the section between ``<!-- BEGIN sampler -->`` and ``<!-- END sampler -->``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "RESULTS.md"
sys.path.insert(0, str(HERE.parent))
from results_md import replace_section  # noqa: E402

GAME = "ALE/Pong-v5"
FRAME_SKIP = 4
PROTOCOL = {"repeat_action_probability": 0.25, "full_action_space": False, "noop_max": 30}
DEVICE = torch.device("cpu")  # where the CNN policy runs (--device)


# ----- agents -----------------------------------------------------------------------------------------------
class TrivialAgent:
    device = torch.device("cpu")
    policy_version = 0

    def __init__(self, num_actions: int) -> None:
        self.n = num_actions

    def act(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"action": torch.randint(0, self.n, (obs.shape[0],))}

    def set_env_steps(self, env_steps: int, total_env_steps: int) -> None:
        """The agent contract: no schedule to drive."""


class CNNAgent:
    """What PPO's ``act`` does: Nature CNN forward, sample, log-prob, value (on ``DEVICE``)."""

    def __init__(self, spec) -> None:  # noqa: ANN001
        from lightning_accelrl.nets.cnn import ActorCriticCNN

        self.device = DEVICE
        self.policy_version = 0
        self.net = ActorCriticCNN(spec, "nature").to(DEVICE)

    def set_env_steps(self, env_steps: int, total_env_steps: int) -> None:
        """The agent contract: no schedule to drive."""

    def act(self, obs: torch.Tensor) -> dict[str, torch.Tensor]:
        from lightning_accelrl.nets.actor_critic import ActionDist

        params, value = self.net(obs)
        dist = ActionDist(params)
        action = dist.sample()
        return {"action": action, "sample_log_prob": dist.log_prob(action), "state_value": value}

    def value(self, obs: torch.Tensor) -> torch.Tensor:
        return self.net.value(obs)


# ----- env factories (module level: picklable for subprocess workers) ----------------------------------------
def gym_atari_env():  # noqa: ANN201
    """One Pong env with Gymnasium's preprocessing (the same protocol as ours)."""
    from lightning_accelrl.envs.atari import _gym_atari_thunk, _protocol

    protocol, _ = _protocol(PROTOCOL)
    return _gym_atari_thunk("pong", protocol)()


def torchrl_atari_env():  # noqa: ANN201
    from torchrl.envs import GymWrapper

    return GymWrapper(gym_atari_env())


# ----- configurations: each returns a function that runs `vsteps` vector steps ----------------------------------
def raw_ale(n: int) -> tuple[Callable[[int], int], Callable[[], None]]:
    from ale_py.vector_env import AtariVectorEnv

    env = AtariVectorEnv("pong", n, autoreset_mode="SameStep", **PROTOCOL)
    env.reset(seed=np.arange(n))
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.single_action_space.n, (1024, n))

    def run(vsteps: int) -> int:
        for t in range(vsteps):
            env.send(actions[t % 1024])
            env.recv()
        return vsteps * n

    return run, env.close


def our_sampler(n: int, kind: str, policy: str) -> tuple[Callable[[int], int], Callable[[], None]]:
    from lightning_accelrl.envs import make_env
    from lightning_accelrl.sampling.alternating import AlternatingSampler
    from lightning_accelrl.sampling.sync import SyncSampler

    env = make_env(GAME, n, seed=0, env_kwargs=PROTOCOL)
    agent = TrivialAgent(env.spec.num_actions) if policy == "trivial" else CNNAgent(env.spec)
    T = 64
    sampler = (SyncSampler if kind == "sync" else AlternatingSampler)(env, T)

    def run(vsteps: int) -> int:
        for _ in range(max(1, vsteps // T)):
            sampler.collect(agent)
        return max(1, vsteps // T) * T * n

    return run, sampler.close


def torchrl_collector(n: int) -> tuple[Callable[[int], int], Callable[[], None]]:
    from torchrl.collectors import Collector
    from torchrl.envs import EnvCreator, ParallelEnv

    env = ParallelEnv(n, EnvCreator(torchrl_atari_env), mp_start_method="fork")
    T = 64
    collector = Collector(env, None, frames_per_batch=n * T, total_frames=-1)
    it = iter(collector)

    def run(vsteps: int) -> int:
        frames = 0
        for _ in range(max(1, vsteps // T)):
            frames += next(it).numel()
        return frames

    def close() -> None:
        collector.shutdown()

    return run, close


def gym_async(n: int) -> tuple[Callable[[int], int], Callable[[], None]]:
    import gymnasium as gym

    env = gym.vector.AsyncVectorEnv(
        [gym_atari_env] * n, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP, context="fork"
    )
    env.reset(seed=list(range(n)))
    rng = np.random.default_rng(0)
    actions = rng.integers(0, env.single_action_space.n, (1024, n))

    def run(vsteps: int) -> int:
        for t in range(vsteps):
            env.step(actions[t % 1024])
        return vsteps * n

    return run, env.close


def cartpole_gym(n: int) -> tuple[Callable[[int], int], Callable[[], None]]:
    import gymnasium as gym

    env = gym.make_vec(
        "CartPole-v1",
        num_envs=n,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP, "copy": False},
    )
    env.reset(seed=0)
    actions = np.random.default_rng(0).integers(0, 2, (1024, n))

    def run(vsteps: int) -> int:
        for t in range(vsteps):
            env.step(actions[t % 1024])
        return vsteps * n

    return run, env.close


def cartpole_ours(n: int) -> tuple[Callable[[int], int], Callable[[], None]]:
    from lightning_accelrl.envs import make_env
    from lightning_accelrl.sampling.sync import SyncSampler

    T = 128
    sampler = SyncSampler(make_env("CartPole-v1", n, seed=0, vectorization="sync"), T)
    agent = TrivialAgent(2)

    def run(vsteps: int) -> int:
        for _ in range(max(1, vsteps // T)):
            sampler.collect(agent)
        return max(1, vsteps // T) * T * n

    return run, sampler.close


ATARI_CONFIGS: dict[str, tuple[str, Callable]] = {
    "a": ("raw AtariVectorEnv, random actions", raw_ale),
    "b": ("SyncSampler + AtariEnv, trivial policy", lambda n: our_sampler(n, "sync", "trivial")),
    "c": ("SyncSampler + AtariEnv, Nature CNN", lambda n: our_sampler(n, "sync", "cnn")),
    "d": ("AlternatingSampler + AtariEnv, Nature CNN", lambda n: our_sampler(n, "alternating", "cnn")),
    "e": ("TorchRL Collector + ParallelEnv(GymWrapper), random", torchrl_collector),
    "f": ("Gymnasium AsyncVectorEnv + AtariPreprocessing + FrameStack", gym_async),
}


def measure(configs: dict[str, tuple[str, Callable]], n: int, vsteps: dict[str, int], repeats: int) -> dict:
    runners = {}
    for key, (_, factory) in configs.items():
        t0 = time.perf_counter()
        runners[key] = factory(n)
        runners[key][0](8)  # warm-up (workers started, first resets done)
        print(f"  [{n} envs] {key} ready in {time.perf_counter() - t0:.1f} s", flush=True)
    rates: dict[str, list[float]] = {k: [] for k in configs}
    for r in range(repeats):
        for key, (run, _) in runners.items():
            t0 = time.perf_counter()
            steps = run(vsteps[key])
            rates[key].append(steps / (time.perf_counter() - t0))
        print(
            f"  [{n} envs] repeat {r}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items()), flush=True
        )
    for _, close in runners.values():
        close()
    return rates


def ratio(rates: dict, num: str, den: str) -> str:
    if num not in rates or den not in rates:  # a config left out with --skip
        return "n/a"
    rs = [a / b for a, b in zip(rates[num], rates[den], strict=True)]
    return f"{statistics.median(rs):.2f} ({min(rs):.2f}–{max(rs):.2f})"


def versions() -> str:
    import ale_py
    import gymnasium

    try:
        import torchrl

        trl = torchrl.__version__
    except ImportError:
        trl = "not installed"
    return (
        f"torch {torch.__version__}, torchrl {trl}, ale-py {ale_py.__version__}, "
        f"gymnasium {gymnasium.__version__}, numpy {np.__version__}, python {platform.python_version()}"
    )


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return f"{os.cpu_count()} cores ({cpu}), {platform.system()} {platform.machine()}; GPU: {gpu}"


def write_section(text: str, name: str) -> None:
    replace_section(name, text, RESULTS)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--envs", type=int, nargs="+", default=[8, 32])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--vsteps", type=int, default=128, help="vector steps per timed measurement (Atari)")
    p.add_argument("--skip", default="", help="configs to leave out, e.g. 'e' (TorchRL)")
    p.add_argument("--device", default="cpu", help="where the Nature CNN policy of c and d runs, e.g. cuda")
    p.add_argument("--section", default="sampler", help="RESULTS.md section to (re)write")
    p.add_argument("--no-write", action="store_true")
    args = p.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    torch.set_num_threads(1)
    load = os.getloadavg()[0]
    started = datetime.datetime.now(datetime.UTC)

    configs = {k: v for k, v in ATARI_CONFIGS.items() if k not in args.skip}
    rows, summaries = [], []
    for n in args.envs:
        vsteps = {k: args.vsteps for k in configs}
        rates = measure(configs, n, vsteps, args.repeats)
        for key, (label, _) in configs.items():
            med = statistics.median(rates[key])
            rows.append(
                f"| {n} | {key} | {label} | {med:,.0f} | {FRAME_SKIP * med:,.0f} | "
                f"{min(rates[key]):,.0f}–{max(rates[key]):,.0f} |"
            )
        s = [f"- {n} envs: b/a = {ratio(rates, 'b', 'a')} (goal ≥ 0.95)"]
        if "e" in configs:
            s.append(
                f"b/e = {ratio(rates, 'b', 'e')}, c/e = {ratio(rates, 'c', 'e')}, "
                f"d/e = {ratio(rates, 'd', 'e')} (goal ≥ 2)"
            )
        s.append(f"d/c (alternating vs sync, CNN) = {ratio(rates, 'd', 'c')}")
        if "f" in configs:
            s.append(f"b/f = {ratio(rates, 'b', 'f')}")
        summaries.append("; ".join(s))

    cp = measure(
        {"gym": ("", cartpole_gym), "ours": ("", cartpole_ours)}, 64, {"gym": 512, "ours": 512}, args.repeats
    )
    cp_line = (
        f"- CartPole-v1, 64 envs: Gymnasium SyncVectorEnv alone {statistics.median(cp['gym']):,.0f} steps/s, "
        f"our SyncSampler + trivial policy {statistics.median(cp['ours']):,.0f} steps/s; "
        f"ours/gym = {ratio(cp, 'ours', 'gym')} (goal ≥ 0.9)"
    )

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE
        ).stdout.strip()
    except OSError:
        commit = "?"
    text = "\n".join(
        [
            f"## Sampler throughput: Atari (Pong, v5 protocol) and CartPole ({started:%Y-%m-%d})",
            "",
            f"- Date: {started:%Y-%m-%d %H:%M} UTC; commit {commit}; 1-min load average at start: {load:.1f}",
            f"- Machine: {machine()}",
            f"- Versions: {versions()}",
            f"- Command: `python benchmarks/sampler/bench_sampler.py {' '.join(sys.argv[1:])}`".rstrip(),
            "- Measured: sampling only (no learning), random or policy actions; env (agent) steps/s and frames/s "
            f"(× frame skip {FRAME_SKIP}); {args.repeats} interleaved repeats of {args.vsteps} vector steps, median "
            f"(min–max). Protocol: sticky actions 0.25, minimal action set, 30 no-op starts, 84×84 gray × 4. "
            f"CNN policy (c, d) on {DEVICE}.",
            "  Ratios are medians of per-repeat ratios (min–max). One torch thread. On a shared machine compare "
            "ratios only.",
            "",
            "| envs | config | what | steps/s | frames/s | steps/s min–max |",
            "|---|---|---|---|---|---|",
            *rows,
            "",
            *summaries,
            cp_line,
        ]
    )
    print(text)
    if not args.no_write:
        write_section(text, args.section)


if __name__ == "__main__":
    main()
