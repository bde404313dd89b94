"""Asynchronous sampling: sampler processes with their own envs and CPU policy copies feed a served table.

```
 sampler proc 0 ─┐  (envs + CPU policy copy, batched inference)     ┌─ learner (Trainer process)
 sampler proc 1 ─┼─► TableClient.insert ─► TableServer (table + limiter) ◄─ TableClient.sample
      ...        ┘                                                    └─ SharedWeights.publish every k updates
```

- **Data** goes through a :class:`~lightning_accelrl.replay.TableServer` (a process owning the table and its rate
  limiter; items travel through shared-memory staging buffers). Rollout mode (APPO, or any rollout algorithm):
  a Queue table of whole rollout segments ``[T, B]``, sampled once each. Replay mode (DQN family): a uniform or
  prioritized table of n-step transitions under a SampleToInsertRatio limiter, which bounds the ratio both ways.
- **Weights** reach the samplers through :class:`SharedWeights`: one flat shared-memory tensor plus a sequence
  counter (a seqlock: odd while the learner writes). Samplers check the counter before every env step / rollout and
  copy when it changed; the version they act with is recorded per item (``policy_version``).
- **Statistics** (env steps, finished episodes, acting versions) go through small shared tensors, one row per
  sampler, each written by its sampler only.
- **Faults**: the learner checks its samplers every ``_CHECK_S`` and while waiting for data; a sampler that exited
  without finishing is restarted (a fresh fork with the current weights and envs on new seeds and stream ids) while
  ``max_restarts`` allows, and then raises :class:`SamplerProcessError` (one line) within about a second. Children ignore SIGINT
  (the learner stops them in order), and exit when the learner process dies (the table server does; their next
  call fails). ``close()`` stops the samplers and the server; nothing stays in ``/dev/shm`` (torch's
  file-descriptor sharing unlinks names at once).

Samplers are started with ``fork`` (about 6 ms each; ``spawn`` would pickle the module and re-import torch,
~1 s per process): a forked child calls ``torch.set_num_threads(1)`` before any torch op, and the policy copy it
uses is a CPU deep copy made before the fork, so a learner on a GPU is fine (the child never touches CUDA).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import logging
import math
import multiprocessing as mp
import os
import sys
import time
import traceback
import weakref
from typing import Any

import torch
from tensordict import TensorDict

from lightning_accelrl.errors import ConfigError
from lightning_accelrl.replay.server import child_signals, sigint_blocked

__all__ = ["AsyncRunner", "SamplerProcessError", "SharedWeights", "parameters_of", "sampler_stream"]

log = logging.getLogger(__name__)

_CHECK_S = 0.5  # how often the learner checks that its samplers are alive (also its sample timeout)
_INSERT_TIMEOUT_S = 1.0  # a blocked insert wakes this often to see whether it should stop
_META_KEYS = ("key", "priority", "probability", "times_sampled", "table_size")
# per-sampler counters
_ENV_STEPS, _EPISODES, _VERSION, _STATE = range(4)
_RUNNING, _FINISHED = 0, 1


class SamplerProcessError(RuntimeError):
    """A sampler process (or the table server) died: the run cannot go on with the data it promised."""


def sampler_stream(rank: int, num_procs: int, idx: int, restarts: int = 0, world_size: int = 1) -> int:
    """The env stream (seed block and frame-stack stream ids) of sampler ``idx`` of ``rank`` after ``restarts``
    restarts of that sampler: a restarted sampler gets a block no sampler of any rank used before, so it neither
    replays the episodes of the process it replaces nor reuses its frame-stack keys in the table."""
    return (restarts * world_size + rank) * num_procs + idx


def streams_end(offset: int, num_procs: int, attempts: list[int], world_size: int = 1) -> int:
    """Above every env stream a rank's samplers used with ``attempts`` restarts per slot (and every other rank's,
    had it restarted as often), streams of a resumed run starting at ``offset`` included."""
    return offset + sampler_stream(0, num_procs, 0, max(attempts) + 1, world_size)


def parameters_of(module: torch.nn.Module) -> list[torch.Tensor]:
    """The tensors the samplers' policy copies receive: all parameters, in ``parameters()`` order."""
    return list(module.parameters())


class SharedWeights:
    """A flat float32 copy of a module's parameters in shared memory, with a seqlock and a policy version.

    ``publish`` (learner) bumps the sequence to odd, copies, writes the version, bumps it to even. ``fetch``
    (sampler) copies only when the sequence is even and changed, and keeps the copy only if the sequence did
    not move meanwhile (a torn read is retried at the next call). One writer, any number of readers.
    """

    def __init__(self, params: list[torch.Tensor]) -> None:
        self.numel = sum(p.numel() for p in params)
        self.flat = torch.zeros(self.numel, dtype=torch.float32).share_memory_()
        self.meta = torch.zeros(2, dtype=torch.int64).share_memory_()  # [sequence, policy version]

    def publish(self, params: list[torch.Tensor], version: int) -> None:
        with torch.no_grad():
            flat = torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in params])
        self.meta[0] += 1
        self.flat.copy_(flat)
        self.meta[1] = int(version)
        self.meta[0] += 1

    def fetch(self, params: list[torch.Tensor], last_seq: int) -> tuple[int, int] | None:
        """Copy new weights into ``params``; returns (sequence, version), or None if nothing new was read."""
        seq = int(self.meta[0])
        if seq == last_seq or seq % 2:
            return None
        flat = self.flat.clone()
        version = int(self.meta[1])
        if int(self.meta[0]) != seq:
            return None
        with torch.no_grad():
            torch.nn.utils.vector_to_parameters(flat, params)
        return seq, version


class _ProgressView:
    """Stands in for the Trainer inside a sampler process: ``module.progress`` reads the shared env-step count."""

    def __init__(self, counters: torch.Tensor, budget: int) -> None:
        self.datamodule = self
        self._counters, self._budget = counters, budget

    @property
    def progress(self) -> float:
        return min(1.0, float(self._counters[:, _ENV_STEPS].sum()) / self._budget)


def _queue_table(max_size: int, state: dict[str, Any] | None = None) -> Any:
    from lightning_accelrl.replay import Table

    table = Table.queue("rollouts", max_size)
    if state is not None:  # resume (in the server process, before it serves anybody)
        table.load_state_dict(state)
    return table


def _replay_table(
    capacity: int,
    prioritized: bool,
    priority_exponent: float,
    limiter: Any,
    frames: bool,
    state: dict[str, Any] | None = None,
    seed: int | None = None,
) -> Any:
    from lightning_accelrl.replay import FrameStackStorage, Table, selectors

    table = Table(
        "replay",
        sampler=selectors.Prioritized(priority_exponent) if prioritized else selectors.Uniform(),
        remover=selectors.Fifo(),
        max_size=capacity,
        rate_limiter=limiter,
        storage=FrameStackStorage(capacity) if frames else None,
        seed=seed,
    )
    if state is not None:
        table.load_state_dict(state)
    return table


def replay_table_factory(
    spec: dict[str, Any], replay: dict[str, Any], state: dict[str, Any] | None, seed: int
) -> functools.partial:
    """The served replay table of a rank (async server or Ray actor): built where it is served, from ``state``
    when resuming. ``spec``: the module's experience spec; ``replay``: capacity, limiter, frames."""
    return functools.partial(
        _replay_table,
        replay["capacity"],
        bool(spec.get("prioritized", False)),
        float(spec.get("priority_exponent", 0.6)),
        replay["limiter"],
        bool(replay.get("frames", False)),
        state,
        seed,
    )


def resume_point(resume: dict[str, Any], kind: str, num_procs: int) -> tuple[dict[str, Any], int, list[int]]:
    """(table state, stream offset, env steps per sampler slot) of a runner's ``state_dict`` for a run with
    ``num_procs`` samplers; another number of samplers goes on with the whole count in slot 0."""
    if resume.get("kind") != kind:
        raise ConfigError(
            f"the checkpoint holds an async {resume.get('kind')} table; this run needs a {kind} table"
        )
    steps = [int(x) for x in torch.as_tensor(resume["env_steps"]).reshape(-1).tolist()]
    if len(steps) != num_procs:
        steps = [sum(steps)] + [0] * (num_procs - 1)
    return resume["table"], int(resume["stream_end"]), steps


def watched_sample(runner: Any, sample: Any, n: int, table_name: str) -> TensorDict | None:
    """``sample(n, timeout=...)`` from a served table while watching the samplers (the async and Ray runners).

    Waits while the limiter refuses, calling ``runner.check()`` (raises when a sampler died) at least every
    ``_CHECK_S``; returns None once ``runner.samplers_finished()`` and the table supplies no more; a lost table
    becomes a one-line :class:`SamplerProcessError`.
    """
    while True:
        now = time.monotonic()
        if now >= runner._next_check:
            runner.check()
            runner._next_check = now + _CHECK_S
        try:
            return sample(n, timeout=_CHECK_S)
        except TimeoutError:
            runner.check()
            if runner.samplers_finished():
                return None
        except ConnectionError as err:
            runner.check()
            raise SamplerProcessError(f"lost {table_name} ({first_line(err)})") from None


def first_line(err: BaseException) -> str:
    """``Type: first line of the message``: errors from other processes, kept to one line."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"


def stream_seed(base_seed: int, stream: int) -> int:
    """Seed of the torch generator in the sampler process of env stream ``stream``: forked children inherit the
    learner's generator state, so without their own seed every sampler would draw the same ε-greedy and
    action-sampling noise."""
    return (base_seed + 7919 * (stream + 1)) % 2**63


class AsyncRunner:
    """Starts and watches the sampler processes and the table server of one rank; the learner's side of both.

    Args:
        module: the algorithm (its ``act``/``value`` run in the samplers on a CPU deep copy).
        env_factory: ``env_factory(stream)`` builds one sampler's batched env (called in the child; the stream is
            :func:`sampler_stream`: it selects the env seeds).
        kind: ``"rollout"`` or ``"replay"`` (the module's ``experience_spec()["kind"]``).
        spec: the module's experience spec (n-step, gamma, prioritized... for replay).
        num_procs: sampler processes of this rank; ``rank``: the global rank (streams and seeds are distinct).
        num_envs: envs per sampler process; ``rollout_steps``: T of a rollout segment.
        budget: env steps this rank's samplers collect in all (they stop there).
        weight_sync_every: publish weights to the samplers every this many policy versions (updates).
        queue_size: rollout mode: segments the queue holds (bounds the policy lag).
        replay: replay mode: dict with capacity, batch_size, limiter (a rate limiter), frames (bool).
        episode_window: finished episodes kept per sampler between two reads by the learner.
        max_restarts: sampler processes that die are restarted, up to this many times in all (over this rank's
            samplers); the next death raises :class:`SamplerProcessError`. 0: fail at the first death.
        world_size: ranks of the run (restarted samplers take env streams beyond every rank's).
        resume: a :meth:`state_dict` of an earlier run: the table (items, priorities, limiter counters) and the
            env-step count go on from there; the samplers take env streams above the saved run's (new seeds, and
            frame-stack stream ids that cannot collide with the restored frames).
        seed: base of the samplers' torch seeds (:func:`stream_seed`) and of the replay table's sampling seed;
            default ``torch.initial_seed()`` (the run's seed after ``seed_everything``).
    """

    def __init__(
        self,
        module: Any,
        env_factory: Any,
        kind: str,
        spec: dict[str, Any],
        num_procs: int,
        rank: int,
        num_envs: int,
        rollout_steps: int,
        budget: int,
        weight_sync_every: int = 1,
        queue_size: int | None = None,
        replay: dict[str, Any] | None = None,
        episode_window: int = 1024,
        max_restarts: int = 0,
        world_size: int = 1,
        resume: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> None:
        if kind not in ("rollout", "replay"):
            raise ConfigError(f"the async sampler streams rollouts or replay samples, not {kind!r}")
        self.kind, self.spec = kind, spec
        self.num_procs, self.rank = num_procs, rank
        self.num_envs, self.rollout_steps = num_envs, rollout_steps
        self.budget = budget
        self.weight_sync_every = max(1, int(weight_sync_every))
        self.queue_size = queue_size or max(2, num_procs)
        self.replay = replay or {}
        self.env_factory = env_factory
        self.window = episode_window
        self.max_restarts = max(0, int(max_restarts))
        self.world_size = max(1, int(world_size))
        self.seed = int(torch.initial_seed() if seed is None else seed)
        self.restarts = 0  # sampler restarts so far (all samplers of this rank)
        self._attempts = [0] * num_procs  # restarts per sampler slot (selects its env stream)
        self._agent: Any = None
        self._params = parameters_of(module)
        self.weights = SharedWeights(self._params)
        self.counters = torch.zeros(num_procs, 4, dtype=torch.int64).share_memory_()
        # finished episodes per sampler: (return, length, score; NaN where the env reports no game score)
        self.episodes = torch.zeros(num_procs, episode_window, 3, dtype=torch.float64).share_memory_()
        self.stop_flag = torch.zeros(1, dtype=torch.int64).share_memory_()
        self._stream_offset = 0  # resume: streams of the saved run stay below this
        self._resume_table: dict[str, Any] | None = None
        if resume is not None:
            self._resume_table, self._stream_offset, steps = resume_point(resume, kind, num_procs)
            self.counters[:, _ENV_STEPS] = torch.tensor(steps, dtype=torch.int64)
        self.server: Any = None
        self.client: Any = None
        self.procs: list[Any] = []
        self._seen = [0] * num_procs
        self._pushed_version = -1
        self._next_check = 0.0
        self._module = module
        self._closed = False
        self._finalizer = weakref.finalize(self, AsyncRunner._cleanup, self.stop_flag, self.procs, [None])

    # ----- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> AsyncRunner:
        from lightning_accelrl.replay import TableServer

        if self.kind == "rollout":
            factory = functools.partial(_queue_table, self.queue_size, self._resume_table)
        else:  # one replay-sampling stream per rank's table
            seed = stream_seed(self.seed, -1 - self.rank)
            factory = replay_table_factory(self.spec, self.replay, self._resume_table, seed)
        self.server = TableServer(factory, start_method="fork").start()  # fork: the state is not pickled
        self._resume_table = None
        self._finalizer.detach()
        self._finalizer = weakref.finalize(
            self, AsyncRunner._cleanup, self.stop_flag, self.procs, [self.server]
        )
        self.client = self.server.client()
        self.publish(self._module, force=True)
        self.counters[:, _VERSION] = self._pushed_version  # what the samplers will act with first
        # restarted samplers fork from this copy too (each fetches the current weights before its first step)
        self._agent = _cpu_copy(self._module)
        for i in range(self.num_procs):
            self.procs.append(self._spawn(i))
        return self

    def _spawn(self, idx: int) -> Any:
        """Fork sampler ``idx`` (SIGINT blocked across the fork: see :func:`sigint_blocked`)."""
        ctx = mp.get_context("fork")  # explicit: `import torchrl` switches the global default to spawn
        stream = self._stream_offset + sampler_stream(
            self.rank, self.num_procs, idx, self._attempts[idx], self.world_size
        )
        p = ctx.Process(
            target=_sampler_main,
            args=(idx, stream, self, self._agent, self.client),
            name=f"accelrl-sampler-{self.rank}-{idx}",
            daemon=True,
        )
        with sigint_blocked():
            p.start()
        return p

    def close(self) -> None:
        """Stop samplers and the table server (idempotent; also run at exit and on garbage collection)."""
        if self._closed:
            return
        self._closed = True
        self._finalizer.detach()
        AsyncRunner._cleanup(self.stop_flag, self.procs, [self.server])
        self.server = None
        if self.client is not None:
            with contextlib.suppress(Exception):
                self.client.close()

    @staticmethod
    def _cleanup(stop_flag: torch.Tensor, procs: list[Any], server: list[Any]) -> None:
        stop_flag.fill_(1)
        if server[0] is not None:  # blocked inserts then fail at once, and the samplers see the stop flag
            with contextlib.suppress(Exception):
                server[0].stop(timeout=2.0)
        deadline = time.monotonic() + 3.0
        for p in procs:
            with contextlib.suppress(ValueError):  # a closed process object (replaced by a restart)
                p.join(max(0.0, deadline - time.monotonic()))
        for p in procs:
            with contextlib.suppress(ValueError):
                if p.is_alive():
                    p.terminate()
                    p.join(1.0)
                if p.is_alive():
                    p.kill()
                    p.join(1.0)

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint needs to resume: the table (a consistent snapshot from the server, taken while the
        samplers go on), the env steps per sampler slot, and the end of the env streams used so far."""
        return {
            "kind": self.kind,
            "table": self.client.state_dict(),
            "env_steps": self.counters[:, _ENV_STEPS].clone(),
            "stream_end": self.stream_end,
        }

    @property
    def stream_end(self) -> int:
        """Above every env stream this rank's samplers used (and every other rank's, had it restarted as often):
        resumed samplers take streams from here, so their frame-stack ids cannot collide with restored frames."""
        return streams_end(self._stream_offset, self.num_procs, self._attempts, self.world_size)

    # ----- the learner's side ---------------------------------------------------------------------------------
    def publish(self, module: Any, force: bool = False) -> None:
        """New weights for the samplers when ``weight_sync_every`` updates passed since the last publication."""
        version = int(getattr(module, "policy_version", 0))
        if force or version - self._pushed_version >= self.weight_sync_every:
            self.weights.publish(self._params, version)
            self._pushed_version = version

    def check(self) -> None:
        """Restart samplers that died while ``max_restarts`` allows; raise :class:`SamplerProcessError` when one
        died beyond that, or when the server died (it holds the table: not restartable)."""
        if self.server is not None and not self.server.is_alive():
            raise SamplerProcessError(f"the replay table server of rank {self.rank} died; stopping the run")
        for i, p in enumerate(self.procs):
            code = p.exitcode
            if code is None or (code == 0 and int(self.counters[i, _STATE]) == _FINISHED):
                continue
            how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
            what = f"async sampler process {i} of rank {self.rank} (pid {p.pid}) {how}"
            if self.restarts >= self.max_restarts or int(self.stop_flag[0]):
                after = f" after {self.restarts} restart(s) (sampler_restarts={self.max_restarts})"
                raise SamplerProcessError(f"{what}{after if self.max_restarts else ''}; stopping the run")
            self.restarts += 1
            self._attempts[i] += 1
            log.warning("%s; restarting it (restart %d of %d)", what, self.restarts, self.max_restarts)
            self.procs[i] = self._spawn(i)  # in place: the exit finalizer holds this list
            with contextlib.suppress(ValueError):
                p.close()  # reaped already (exitcode is set): release its resources

    @property
    def all_finished(self) -> bool:
        return bool((self.counters[:, _STATE] == _FINISHED).all())

    def samplers_finished(self) -> bool:
        """Whether every sampler finished (read when a sample timed out: see :func:`watched_sample`)."""
        return self.all_finished

    def sample(self, n: int) -> TensorDict | None:
        """``n`` items from the table, waiting while the limiter refuses; None when the samplers finished and the
        table cannot supply more."""
        return watched_sample(self, self.client.sample, n, "the replay table server")

    def next_rollout(self) -> TensorDict | None:
        """One rollout segment ``[T, B]`` (oldest first)."""
        item = self.sample(1)
        if item is None:
            return None
        seg = item.exclude(*_META_KEYS)[0]
        seg.batch_size = torch.Size([self.rollout_steps, self.num_envs])
        return seg

    def update_priorities(self, keys: torch.Tensor, priorities: torch.Tensor) -> None:
        self.client.update_priorities(keys.detach().cpu(), priorities.detach().float().cpu())

    @property
    def env_steps(self) -> int:
        return int(self.counters[:, _ENV_STEPS].sum())

    @property
    def acting_version(self) -> int:
        """The oldest policy version any sampler acts with now."""
        return int(self.counters[:, _VERSION].min())

    def drain_episodes(self) -> list[tuple[float, float, float]]:
        """Episodes finished since the last call (return, length, score or NaN), over all samplers."""
        out: list[tuple[float, float, float]] = []
        for i in range(self.num_procs):
            count = int(self.counters[i, _EPISODES])
            new = min(count - self._seen[i], self.window)
            for j in range(count - new, count):
                out.append(tuple(self.episodes[i, j % self.window].tolist()))
            self._seen[i] = count
        return out

    def table_info(self) -> dict[str, Any]:
        return self.client.info()


def _cpu_copy(module: Any) -> Any:
    """A CPU deep copy of the module without its Trainer (made before forking)."""
    trainer = getattr(module, "_trainer", None)
    module._trainer = None
    try:
        agent = copy.deepcopy(module)
    finally:
        module._trainer = trainer
    return agent.cpu().eval()


# ----- the sampler process ----------------------------------------------------------------------------------------
def _sampler_main(idx: int, stream: int, runner: AsyncRunner, agent: Any, client: Any) -> None:
    child_signals()  # Ctrl-C goes to the learner, which stops us in order; SIGTERM kills us
    torch.set_num_threads(1)  # before any torch op: a forked child hangs on its first parallel op otherwise
    stop, counters = runner.stop_flag, runner.counters
    code = 0
    try:
        _sample_loop(idx, stream, runner, agent, client)
        counters[idx, _STATE] = _FINISHED
    except ConnectionError:
        if not int(stop[0]):  # the server went away without being asked to: the learner is gone
            code = 1
    except Exception:
        if not int(stop[0]):
            sys.stderr.write(f"async sampler process {idx} failed:\n{traceback.format_exc()}")
            code = 1
    sys.stderr.flush()
    os._exit(code)  # no inherited atexit handlers or finalizers (they belong to the learner)


def _sample_loop(idx: int, stream: int, runner: AsyncRunner, agent: Any, client: Any) -> None:
    from lightning_accelrl.replay import NStepWriter, StreamIndexer
    from lightning_accelrl.sampling import SyncSampler

    stop, counters, ring, window = runner.stop_flag, runner.counters, runner.episodes, runner.window
    torch.manual_seed(stream_seed(runner.seed, stream))
    env = runner.env_factory(stream)
    agent._trainer = _ProgressView(counters, runner.budget)  # ε schedules etc. follow the global env steps
    params = parameters_of(agent)
    replay = runner.kind == "replay"
    sampler = SyncSampler(
        env, 1 if replay else runner.rollout_steps, store_next_observation=True, episode_window=window
    )
    writer = indexer = None
    if replay:
        writer = NStepWriter(runner.spec["n_step"], runner.spec["gamma"], env.num_envs)
        shape, dtype = env.spec.observation_shape, env.spec.observation_dtype
        if len(shape) == 3 and dtype == torch.uint8:
            indexer = StreamIndexer(env.num_envs, shape[0], stream * env.num_envs)
    # a restarted sampler continues its slot's counts (env steps, episodes) where the dead process left them
    base_steps, published = int(counters[idx, _ENV_STEPS]), int(counters[idx, _EPISODES])
    seq, episodes_seen = -1, 0
    try:
        while not int(stop[0]) and int(counters[:, _ENV_STEPS].sum()) < runner.budget:
            got = runner.weights.fetch(params, seq)
            if got is not None:
                seq, agent.policy_version = got
                counters[idx, _VERSION] = agent.policy_version
            data = sampler.collect(agent)
            counters[idx, _ENV_STEPS] = base_steps + sampler.env_steps
            tracker = sampler.tracker
            if tracker.episodes > episodes_seen:  # publish finished episodes: entries first, then the count
                new = tracker.episodes - episodes_seen
                for k, episode in enumerate(tracker.last(new)):  # (return, length, score or NaN)
                    ring[idx, (published + k) % window] = torch.tensor(episode, dtype=torch.float64)
                episodes_seen, published = tracker.episodes, published + new
                counters[idx, _EPISODES] = published
            if replay:
                step = data[0]
                if indexer is not None:
                    step = indexer(step)
                items = writer.add(step)
                if items is None or items.batch_size[0] == 0:
                    continue
            else:
                items = data.unsqueeze(0)  # one item: the whole segment [T, B]
            _insert(client, items, stop)
    finally:
        with contextlib.suppress(Exception):
            env.close()


def _insert(client: Any, items: TensorDict, stop: torch.Tensor) -> None:
    """Insert all of ``items``, blocking while the limiter refuses, waking to check the stop flag."""
    while True:
        try:
            client.insert(items, timeout=_INSERT_TIMEOUT_S)
            return
        except TimeoutError as err:
            done = int(getattr(err, "num_inserted", 0))
            if done:
                items = items[done:]
            if int(stop[0]):
                return


def default_queue_size(num_procs: int) -> int:
    return max(2, num_procs)


def lag_summary(lags: list[int]) -> dict[str, float]:
    """Median, p90 and max of a list of policy lags (for benchmarks and logs)."""
    if not lags:
        return {"lag_p50": math.nan, "lag_p90": math.nan, "lag_max": math.nan}
    s = sorted(lags)
    return {
        "lag_p50": float(s[len(s) // 2]),
        "lag_p90": float(s[min(len(s) - 1, int(0.9 * len(s)))]),
        "lag_max": float(s[-1]),
    }
