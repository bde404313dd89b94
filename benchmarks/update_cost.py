"""Per-update cost of our full training loop against a bare PyTorch loop doing the same maths, in one process.

For DQN, C51 (replay, the ``*-cartpole`` recipes' settings) and PPO (rollouts, ``ppo-cartpole``) on CartPole-v1,
and PPO on Atari (``ppo-atari``: the ``ppo-breakout`` recipe, Nature CNN on 84×84×4 uint8 frames):

- **ours**: ``Trainer.fit`` with the recipe's algorithm, ``ExperienceDataModule``, replay table, CSV and TensorBoard
  loggers, the CLI's default callbacks (env-step progress bar, ``last.ckpt``, RNG state, ``RunSummary``). Timed
  per update once warm: ``full`` is wall time per update; ``update`` subtracts the time spent stepping envs (for
  replay: stepping and inserting, the source's ``replay/env_time_s``; for rollouts: collecting the rollout).
- **bare**: the same network, batch and maths in a plain loop (uniform sample gathered from a preallocated
  replay of random data; three forwards, Huber or the C51 projection, gradient clipping, fused Adam, Polyak; or
  GAE and PPO's epochs) — the floor an update path is measured against.

Runs are interleaved (ours, bare, ours, bare, ...), one torch thread; medians are printed with the load average.

    .venv/bin/python benchmarks/update_cost.py                        # dqn c51 ppo, 3 repeats
    .venv/bin/python benchmarks/update_cost.py --algo dqn --repeats 5
    .venv/bin/python benchmarks/update_cost.py --algo dqn --profile    # cProfile of one of our runs
    .venv/bin/python benchmarks/update_cost.py --algo dqn c51 --updates-per-batch 4
    .venv/bin/python benchmarks/update_cost.py --algo ppo-atari --repeats 3      # ale-py (the atari extra)
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import importlib
import io
import os
import pstats
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml

HERE = Path(__file__).resolve().parent
RECIPES = HERE.parent / "lightning_accelrl" / "recipes"
RECIPE = {"dqn": "dqn-cartpole", "c51": "c51-cartpole", "ppo": "ppo-cartpole", "ppo-atari": "ppo-breakout"}


def load_recipe(algo: str) -> dict[str, Any]:
    return yaml.safe_load((RECIPES / f"{RECIPE[algo]}.yaml").read_text())


def model_from(recipe: dict[str, Any]) -> torch.nn.Module:
    module, _, name = recipe["model"]["class_path"].rpartition(".")
    return getattr(importlib.import_module(module), name)(**recipe["model"]["init_args"])


def loadavg() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


# --------------------------------------------------------------------------------------------- ours
def _clock() -> tuple[float, float]:
    """(wall, CPU time of this thread): the CPU time is what a loaded machine distorts least."""
    return time.perf_counter(), time.thread_time()


class _Env:
    """Time spent stepping envs (replay: stepping and inserting; rollouts: collecting the rollout)."""

    wall = cpu = 0.0

    @classmethod
    def add(cls, start: tuple[float, float]) -> None:
        wall, cpu = _clock()
        cls.wall += wall - start[0]
        cls.cpu += cpu - start[1]


def ours(
    algo: str,
    env_steps: int,
    warm: int,
    profile: bool = False,
    log_every: int | None = None,
    updates_per_batch: int = 1,
) -> dict[str, float]:
    """One fit of the recipe (shortened to ``env_steps``; ``log_every`` replaces its ``log_every_n_steps``): ms
    per update, full and without env stepping."""
    import lightning as L
    from lightning.pytorch import Callback
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    from lightning_accelrl import ExperienceDataModule
    from lightning_accelrl.callbacks.progress import EnvStepProgressBar
    from lightning_accelrl.callbacks.rng import RNGState
    from lightning_accelrl.callbacks.summary import RunSummary
    from lightning_accelrl.data.replay import ReplaySource

    recipe = load_recipe(algo)
    replay = not is_ppo(algo)
    _Env.wall = _Env.cpu = 0.0

    class TimedReplay(ReplaySource):
        """The in-process replay source, timing its env stepping and inserts (``_feed``)."""

        def _feed(self, agent) -> None:
            start = _clock()
            super()._feed(agent)
            _Env.add(start)

    class TimedData(ExperienceDataModule):
        """Times the rollouts' collection."""

        def next_batch(self):
            start = _clock()
            batch = super().next_batch()
            if not replay:
                _Env.add(start)
            return batch

    marks: dict[str, tuple[float, ...]] = {}

    class Mark(Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            updates = trainer.datamodule.updates_done  # counts updates (K per batch with updates_per_batch K)
            if "start" in marks:
                marks["end"] = (*_clock(), _Env.wall, _Env.cpu, updates)
            elif updates >= warm:
                marks["start"] = (*_clock(), _Env.wall, _Env.cpu, updates)

    data = dict(recipe["data"], total_env_steps=env_steps)
    if replay:
        data["sampler"] = TimedReplay
    L.seed_everything(recipe["seed_everything"], verbose=False)
    dm = TimedData(**data)
    if replay:
        recipe["model"]["init_args"]["updates_per_batch"] = updates_per_batch
    model = model_from(recipe)
    if log_every is not None:
        recipe["trainer"]["log_every_n_steps"] = log_every
    with tempfile.TemporaryDirectory() as root:
        trainer = L.Trainer(
            **{k: v for k, v in recipe["trainer"].items() if k not in ("logger", "max_epochs")},
            max_epochs=-1,
            logger=[CSVLogger(root, name=algo), TensorBoardLogger(root, name=algo)],
            callbacks=[
                EnvStepProgressBar(),
                ModelCheckpoint(save_last=True),
                RNGState(),
                RunSummary(target_return=recipe["summary"]["target_return"]),
                Mark(),
            ],
            default_root_dir=root,
            enable_model_summary=False,
        )
        profiler = cProfile.Profile() if profile else None
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            if profiler:
                profiler.enable()
            trainer.fit(model, datamodule=dm)
            if profiler:
                profiler.disable()
    if profiler:
        stats = pstats.Stats(profiler)
        stats.sort_stats("cumulative").print_stats(45)
        stats.sort_stats("tottime").print_stats(30)
    if "end" not in marks:
        raise RuntimeError(f"{algo}: fewer than {warm} updates in {env_steps} env steps; raise --env-steps")
    (w0, c0, ew0, ec0, u0), (w1, c1, ew1, ec1, u1) = marks["start"], marks["end"]
    n = u1 - u0
    ms = 1e3 / n
    return {
        "full_ms": (w1 - w0) * ms,
        "update_ms": (w1 - w0 - (ew1 - ew0)) * ms,
        "full_cpu_ms": (c1 - c0) * ms,
        "update_cpu_ms": (c1 - c0 - (ec1 - ec0)) * ms,
        "updates": n,
    }


# --------------------------------------------------------------------------------------------- bare loops
def is_ppo(algo: str) -> bool:
    return algo.startswith("ppo")


def _spec(recipe: dict[str, Any]):
    """The env spec of the recipe's env (with its env kwargs)."""
    from lightning_accelrl import ExperienceDataModule

    data = recipe["data"]
    return ExperienceDataModule(data["env"], env_kwargs=data.get("env_kwargs")).env_spec


def bare_q(algo: str, updates: int, warm: int) -> dict[str, float]:
    """The DQN/C51 update written out: uniform sample, three forwards, loss, clip, fused Adam, Polyak."""
    from lightning_accelrl.algos.c51 import project_distribution
    from lightning_accelrl.nets.q import QNetwork

    recipe = load_recipe(algo)
    hp, data = recipe["model"]["init_args"], recipe["data"]
    spec = _spec(recipe)
    atoms = hp.get("num_atoms", 1)
    q = QNetwork(spec, "auto", hp["hidden"], dueling=hp["dueling"], num_atoms=atoms)
    q_target = QNetwork(spec, "auto", hp["hidden"], dueling=hp["dueling"], num_atoms=atoms)
    q_target.load_state_dict(q.state_dict())
    q_target.requires_grad_(False)
    opt = torch.optim.Adam(q.parameters(), lr=hp["lr"], eps=1.5e-4, fused=True)
    support = torch.linspace(hp.get("v_min", 0.0), hp.get("v_max", 1.0), atoms)
    size, batch, obs_dim = 20_000, data["batch_size"], spec.observation_shape[0]
    obs, next_obs = torch.randn(size, obs_dim), torch.randn(size, obs_dim)
    action = torch.randint(0, spec.num_actions, (size,))
    reward, discount = torch.rand(size), torch.full((size,), 0.99**5)
    tau, target_params, params = hp["target_tau"], list(q_target.parameters()), list(q.parameters())
    times = []
    for i in range(updates):
        t0 = _clock()
        idx = torch.randint(0, size, (batch,))
        o, a, r, o2, d = (x.index_select(0, idx) for x in (obs, action, reward, next_obs, discount))
        for group in opt.param_groups:
            group["lr"] = hp["lr"] * (1 - i / updates)
        out = q(o)
        with torch.no_grad():
            online_next, target_next = q(o2), q_target(o2)
            if atoms == 1:
                best = online_next.argmax(-1, keepdim=True)
                target = r + d * target_next.gather(-1, best).squeeze(-1)
            else:
                best = (online_next.softmax(-1) * support).sum(-1).argmax(-1)
                p = target_next.softmax(-1)[torch.arange(batch), best]
                target = project_distribution(p, r, d, support)
        if atoms == 1:
            loss = F.huber_loss(out.gather(-1, a.unsqueeze(-1)).squeeze(-1), target)
        else:
            loss = -(target * F.log_softmax(out[torch.arange(batch), a], -1)).sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, hp["max_grad_norm"])
        opt.step()
        torch._foreach_lerp_(target_params, params, tau)
        if i >= warm:
            times.append(_since(t0))
    return _mean_ms(times)


def bare_ppo(algo: str, updates: int, warm: int) -> dict[str, float]:
    """PPO's update written out: GAE over a [T, B] rollout, then ``update_epochs`` passes of minibatches (with
    the value loss clipped where the recipe clips it)."""
    from lightning_accelrl.algos.returns import gae
    from lightning_accelrl.nets.actor_critic import ActionDist
    from lightning_accelrl.nets.factory import build_actor_critic

    recipe = load_recipe(algo)
    hp, data = recipe["model"]["init_args"], recipe["data"]
    spec = _spec(recipe)
    net = build_actor_critic(spec, hp.get("network", "auto"), hp.get("hidden", (64, 64)), "tanh")
    opt = torch.optim.Adam(net.parameters(), lr=hp["lr"], eps=1e-5, fused=True)
    t_steps, b = data["rollout_steps"], data["num_envs"]
    if spec.observation_dtype == torch.uint8:  # frames: the network scales them
        obs = torch.randint(0, 256, (t_steps, b, *spec.observation_shape), dtype=torch.uint8)
    else:
        obs = torch.randn(t_steps, b, *spec.observation_shape)
    reward, value, next_value = (
        torch.ones(t_steps, b, 1),
        torch.randn(t_steps, b, 1),
        torch.randn(t_steps, b, 1),
    )
    done = torch.rand(t_steps, b, 1) < 0.02
    action = torch.randint(0, spec.num_actions, (t_steps, b))
    old_logp = torch.full((t_steps, b), -0.69)
    clip, mb = hp["clip_coef"], hp["minibatch_size"]
    times = []
    for i in range(updates):
        t0 = _clock()
        for group in opt.param_groups:
            group["lr"] = hp["lr"] * (1 - i / updates)
        with torch.no_grad():
            adv, ret = gae(reward, value, next_value, done, done, hp["gamma"], hp["gae_lambda"])
        o, a, lp = obs.flatten(0, 1), action.flatten(0, 1), old_logp.flatten(0, 1)
        adv, ret = adv.reshape(-1), ret.reshape(-1)
        n = o.shape[0]
        for _ in range(hp["update_epochs"]):
            perm = torch.randperm(n)
            for start in range(0, n - mb + 1, mb):
                idx = perm[start : start + mb]
                params, v = net(o.index_select(0, idx))
                dist = ActionDist.from_params(params, spec)
                logp = dist.log_prob(a.index_select(0, idx))
                ratio = (logp - lp.index_select(0, idx)).exp()
                ad = adv.index_select(0, idx)
                ad = (ad - ad.mean()) / (ad.std() + 1e-8)
                pg = torch.max(-ad * ratio, -ad * ratio.clamp(1 - clip, 1 + clip)).mean()
                v, r = v.squeeze(-1), ret.index_select(0, idx)
                if hp.get(
                    "clip_value_loss", False
                ):  # CleanRL's clipped value loss, around the rollout's values
                    v_old = value.reshape(-1).index_select(0, idx)
                    v_clipped = v_old + (v - v_old).clamp(-clip, clip)
                    vl = 0.5 * torch.max((v - r) ** 2, (v_clipped - r) ** 2).mean()
                else:
                    vl = 0.5 * ((v - r) ** 2).mean()
                loss = pg + hp["value_coef"] * vl - hp["entropy_coef"] * dist.entropy().mean()
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), hp["max_grad_norm"])
                opt.step()
        if i >= warm:
            times.append(_since(t0))
    return _mean_ms(times)


def _since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = _clock()
    return wall - start[0], cpu - start[1]


def _mean_ms(times: list[tuple[float, float]]) -> dict[str, float]:
    return {
        "update_ms": 1e3 * statistics.fmean(t[0] for t in times),
        "update_cpu_ms": 1e3 * statistics.fmean(t[1] for t in times),
    }


def bare(algo: str, updates: int, warm: int) -> dict[str, float]:
    return bare_ppo(algo, updates, warm) if is_ppo(algo) else bare_q(algo, updates, warm)


# --------------------------------------------------------------------------------------------- main
# env steps of each of our runs, warm-up updates (ppo-atari: one update is a 1,024-step rollout's 16 CNN steps)
DEFAULTS = {"dqn": (12_000, 200), "c51": (12_000, 200), "ppo": (60_000, 30), "ppo-atari": (10_240, 2)}
BARE_UPDATES = {"ppo": 60, "ppo-atari": 6}  # the replay algorithms: 600


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Per-update cost: our training loop vs a bare same-maths loop.")
    p.add_argument("--algo", nargs="+", choices=list(RECIPE), default=list(RECIPE))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--env-steps", type=int, default=None, help="budget of each of our runs")
    p.add_argument("--bare-updates", type=int, default=None, help="updates of each bare run")
    p.add_argument("--profile", action="store_true", help="cProfile one of our runs per algorithm instead")
    p.add_argument("--log-every", type=int, default=None, help="replace the recipes' log_every_n_steps")
    p.add_argument("--updates-per-batch", type=int, default=1, help="DQN/C51: updates per training batch")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, {os.cpu_count()} cores")
    for algo in args.algo:
        env_steps, warm = DEFAULTS[algo]
        env_steps = args.env_steps or env_steps
        if args.profile:
            print(f"== {algo}: cProfile of one run ({env_steps} env steps), load {loadavg()}")
            ours(algo, env_steps, warm, True, args.log_every, args.updates_per_batch)
            continue
        bare_updates = args.bare_updates or BARE_UPDATES.get(algo, 600)
        rows: dict[str, list[float]] = {}
        every = "" if args.log_every is None else f", log_every_n_steps {args.log_every}"
        if args.updates_per_batch > 1 and not is_ppo(algo):
            every += f", {args.updates_per_batch} updates per batch"
        print(f"== {algo} ({RECIPE[algo]}, {env_steps} env steps per run, warm after {warm} updates{every})")
        for rep in range(args.repeats):
            load = loadavg()
            o = ours(algo, env_steps, warm, False, args.log_every, args.updates_per_batch)
            b = bare(algo, bare_updates, max(1, bare_updates // 10))
            for key, value in [*o.items(), ("bare_ms", b["update_ms"]), ("bare_cpu_ms", b["update_cpu_ms"])]:
                rows.setdefault(key, []).append(value)
            print(
                f"  run {rep}: ours full {o['full_ms']:.2f} ms (CPU {o['full_cpu_ms']:.2f}), update "
                f"{o['update_ms']:.2f} ms (CPU {o['update_cpu_ms']:.2f}) over {o['updates']} updates | bare "
                f"{b['update_ms']:.2f} ms (CPU {b['update_cpu_ms']:.2f}) | load {load}",
                flush=True,
            )
        m = {k: statistics.median(v) for k, v in rows.items()}
        print(
            f"  median of {args.repeats}: ours full {m['full_ms']:.2f} ms, update {m['update_ms']:.2f} ms, bare "
            f"{m['bare_ms']:.2f} ms: update/bare {m['update_ms'] / m['bare_ms']:.2f}x, full/bare "
            f"{m['full_ms'] / m['bare_ms']:.2f}x\n  CPU time: ours full {m['full_cpu_ms']:.2f} ms, update "
            f"{m['update_cpu_ms']:.2f} ms, bare {m['bare_cpu_ms']:.2f} ms: update/bare "
            f"{m['update_cpu_ms'] / m['bare_cpu_ms']:.2f}x, full/bare {m['full_cpu_ms'] / m['bare_cpu_ms']:.2f}x"
            f" | load {loadavg()}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
