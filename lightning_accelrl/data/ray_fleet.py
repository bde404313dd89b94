"""The Ray plumbing every ``sampler: ray`` source shares: connecting to Ray, the coordinator actor, placing,
watching, replacing and stopping one rank's sampler actors.

- **Ray**: a local Ray on loopback with a per-run token (:func:`~lightning_accelrl.replay.ray_local.start_local_ray`)
  unless Ray is initialised already, or ``ray_address`` names a running cluster to join (its nodes were started by
  the user, on the addresses the user chose).
- **Placement**: sampler actors ask for 1 CPU plus ``ray_sampler_resources`` (e.g. ``{"sampler_node": 1}``: only
  nodes started with that custom resource take them); the coordinator (and a source's table) are pinned to the
  learner's node and take no CPU slot.
- **Coordinator**: the published weights with their version, each sampler's env steps and acting version, the
  finished episodes not yet read by the learner, and the stop flag.
- **Supervision**: a sampler actor that dies or raises is replaced while ``sampler_restarts`` allows (a fresh actor,
  an env stream no sampler used, its slot's env-step count); one whose resources the cluster lacks for
  :data:`PLACEMENT_TIMEOUT_S` (its node was lost and no other has the resources), one the cluster could hold that
  still has not started after :data:`START_TIMEOUT_S` (on a loaded machine starting a worker and importing torch
  can take a minute), or a failure beyond the restarts raises
  :class:`~lightning_accelrl.data.supervision.SamplerProcessError` (one line): never a silent wait.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from typing import Any

import numpy as np
import torch

from lightning_accelrl.data.shared_weights import flat_parameters, parameters_of
from lightning_accelrl.data.source import SourceContext
from lightning_accelrl.data.supervision import SamplerProcessError, first_line, sampler_stream, streams_end
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.sampling.agent import Agent
from lightning_accelrl.sampling.episodes import EpisodeTracker

try:
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ConfigError("sampler='ray' needs Ray: pip install 'lightning-accelrl[ray]'") from err

__all__ = ["PLACEMENT_TIMEOUT_S", "START_TIMEOUT_S", "RayFleet", "fits", "learner_node_options"]

log = logging.getLogger(__name__)

# how long a sampler actor may take to start before the run fails: while it asks for more than the cluster has
# (a lost node, resources no node offers), and while the cluster could hold it (a slow start on a busy machine)
PLACEMENT_TIMEOUT_S = 60.0
START_TIMEOUT_S = 600.0
_STOP_GRACE_S = 3.0  # close(): how long running calls get to return by themselves before actors are killed


class _Coordinator:
    """Actor body: the published weights, per-sampler counters, pending episodes and the stop flag.

    A plain (synchronous) actor: Ray runs its calls one at a time, so no locking is needed.
    """

    def __init__(self, num_procs: int, budget: int, base_steps: list[int] | None = None) -> None:
        self.budget = budget
        self.base = list(base_steps or [0] * num_procs)  # resume: each slot's env steps before this run
        self.env_steps = list(self.base)
        self.versions = [-1] * num_procs
        self.finished = [False] * num_procs
        self.nodes: list[str | None] = [None] * num_procs
        self.episodes: list[tuple[float, float, float]] = []
        self.stop = False
        self.version, self.weights = -1, np.zeros(0, np.float32)

    def set_weights(self, version: int, flat: np.ndarray) -> None:
        self.version, self.weights = int(version), flat

    def get_weights(self) -> tuple[int, np.ndarray]:
        return self.version, self.weights

    def report(
        self,
        idx: int,
        env_steps: int,
        episodes: list[tuple[float, float, float]],
        version: int,
        finished: bool,
    ) -> tuple[bool, int, int]:
        """A sampler's counts; returns (go on?, total env steps, latest weight version)."""
        self.env_steps[idx], self.versions[idx] = self.base[idx] + env_steps, version
        self.episodes.extend(episodes)
        self.finished[idx] = self.finished[idx] or finished
        total = sum(self.env_steps)
        return (not self.stop and total < self.budget), total, self.version

    def status(self) -> dict[str, Any]:
        """The learner's view; hands over (and forgets) the episodes finished since the last call."""
        episodes, self.episodes = self.episodes, []
        return {
            "env_steps": sum(self.env_steps),
            "env_steps_each": list(self.env_steps),
            "acting_version": min(self.versions),
            "all_finished": all(self.finished),
            "episodes": episodes,
        }

    def request_stop(self) -> None:
        self.stop = True

    def restart_slot(self, idx: int) -> None:
        """A replacement sampler takes slot ``idx``: its own count starts at 0 on top of the dead one's."""
        self.base[idx], self.finished[idx], self.nodes[idx] = self.env_steps[idx], False, None

    def stopped(self) -> bool:
        return self.stop

    def node_id(self) -> str:
        """The Ray node this actor runs on (the learner's)."""
        return ray.get_runtime_context().get_node_id()

    def placed(self, idx: int, node_id: str) -> None:
        """Sampler ``idx`` started on node ``node_id``."""
        self.nodes[idx] = node_id

    def sampler_nodes(self) -> list[str | None]:
        return list(self.nodes)


def _checked_resources(resources: Any) -> dict[str, float]:
    """``ray_sampler_resources``: names of custom resources with amounts > 0 (one line otherwise)."""
    if resources is None:
        return {}
    ok = isinstance(resources, dict) and all(
        isinstance(k, str) and k and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
        for k, v in resources.items()
    )
    if not ok or {"CPU", "GPU", "memory"} & set(resources):
        raise ConfigError(
            f"ray_sampler_resources must map custom resource names to amounts > 0 (e.g. {{'sampler_node': 1}}; "
            f"CPU, GPU and memory are not custom), got {resources!r}"
        )
    return {k: float(v) for k, v in resources.items()}


def connect_ray(address: str | None) -> bool:
    """Join the cluster at ``address``, use the Ray this process is connected to, or start a local one on
    loopback; returns whether this call connected (the caller then disconnects at the end)."""
    from lightning_accelrl.replay.ray_local import start_local_ray

    if ray.is_initialized():
        return False
    if address is None:
        return start_local_ray()
    _check_reachable(address)
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as err:
        raise ConfigError(
            f"could not join the Ray cluster at ray_address={address!r} ({first_line(err)}): start it with "
            "`ray start --head` (and export the same RAY_AUTH_MODE/RAY_AUTH_TOKEN), or leave ray_address unset"
        ) from None
    return True


def _check_reachable(address: str) -> None:
    """One line at once for a ``host:port`` nobody listens on (Ray itself retries for minutes)."""
    import socket

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        return  # "auto", "ray://...": Ray's own resolution
    try:
        socket.create_connection((host, int(port)), timeout=5.0).close()
    except OSError as err:
        raise ConfigError(
            f"nothing answers at ray_address={address!r} ({err.strerror or err}): start the cluster's head there "
            "(`ray start --head --port PORT`) or fix the address"
        ) from None


def fits(actor_options: dict[str, Any], cluster: dict[str, float]) -> bool:
    """Whether the cluster's total resources (``ray.cluster_resources()``) cover what one actor asks for: its
    CPUs and custom resources. A lost node's resources leave the totals, so a request only it could meet stops
    fitting."""
    need = {"CPU": float(actor_options.get("num_cpus", 0)), **actor_options.get("resources", {})}
    return all(cluster.get(name, 0.0) >= amount for name, amount in need.items() if amount > 0)


def learner_node_options() -> dict[str, Any]:
    """Actor options that pin an actor to this process's node without taking a CPU slot (table, coordinator)."""
    node = ray.get_runtime_context().get_node_id()
    return {"num_cpus": 0, "scheduling_strategy": NodeAffinitySchedulingStrategy(node, soft=False)}


class RayFleet:
    """One rank's sampler actors and their coordinator: placement, weights, counts, supervision, shutdown.

    ``body`` is the actor class (``body(idx, stream, agent, ctx, coordinator, *extra)``); the source decides what
    the actors do (long ``run`` calls it hands to :meth:`watch`, or calls it waits for with :meth:`wait`).
    """

    def __init__(self, ctx: SourceContext, body: type) -> None:
        settings = ctx.settings
        self.ctx, self.body = ctx, body
        self.num_procs = int(settings["num_sampler_procs"])
        self.weight_sync_every = max(1, int(settings["weight_sync_every"]))
        self.max_restarts = max(0, int(settings["sampler_restarts"]))
        resources = _checked_resources(settings.get("ray_sampler_resources"))
        self.actor_options: dict[str, Any] = {
            "num_cpus": 1,
            **({"resources": resources} if resources else {}),
        }
        self.address = settings.get("ray_address")
        self.tracker = EpisodeTracker(1, ctx.episode_window)
        self.restarts = 0
        self.attempts = [0] * self.num_procs  # restarts per sampler slot (selects its env stream)
        self.stream_offset = 0  # resume: streams of the saved run stay below this
        self.base_steps = [0] * self.num_procs
        self.coord: Any = None
        self.actors: list[Any] = []
        self._ready: list[tuple[Any, float] | None] = []  # (ready ref, spawn time) until the actor is placed
        self._extra: tuple[Any, ...] = ()
        self._pushed_version = -1
        self.status: dict[str, Any] = {
            "env_steps": 0, "env_steps_each": list(self.base_steps), "acting_version": 0,
            "all_finished": False, "episodes": [],
        }  # fmt: skip
        self._connected = False
        self.closed = False

    # ----- lifecycle --------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Join or start Ray (before any actor is created)."""
        self._connected = connect_ray(self.address)

    def start(self, agent: Agent, budget: int, *extra: Any) -> None:
        """The coordinator (current weights published) and ``num_procs`` sampler actors; ``extra`` goes to each."""
        self._params = parameters_of(agent)
        self.coord = (
            ray.remote(_Coordinator)
            .options(**learner_node_options())
            .remote(self.num_procs, budget, self.base_steps)
        )
        self.publish(agent, force=True)
        self._agent = agent.detached_copy()  # replacements start from it too (and fetch current weights)
        self._extra = extra
        for i in range(self.num_procs):
            self.actors.append(None)
            self._ready.append(None)
            self._spawn(i)

    def _spawn(self, idx: int) -> None:
        """Sampler actor ``idx`` on the env stream of its slot's current restart count."""
        stream = self.stream_offset + sampler_stream(
            self.ctx.rank, self.num_procs, idx, self.attempts[idx], self.ctx.world_size
        )
        actor_cls = ray.remote(self.body).options(max_restarts=0, **self.actor_options)
        actor = actor_cls.remote(idx, stream, copy.deepcopy(self._agent), self.ctx, self.coord, *self._extra)
        self.actors[idx] = actor
        self._ready[idx] = (actor.__ray_ready__.remote(), time.monotonic())

    def close(self, running: list[Any]) -> None:
        """Stop flag, a moment for the ``running`` calls to return, then kill the coordinator and every actor."""
        if self.closed:
            return
        with contextlib.suppress(Exception):
            self.drain()
        self.closed = True
        if self.coord is not None:
            with contextlib.suppress(Exception):
                ray.get(self.coord.request_stop.remote(), timeout=2.0)
        if running:
            with contextlib.suppress(Exception):
                ray.wait(running, num_returns=len(running), timeout=_STOP_GRACE_S)
        for actor in [*self.actors, self.coord]:
            if actor is not None:
                with contextlib.suppress(Exception):
                    ray.kill(actor)

    def disconnect(self) -> None:
        """Leave Ray if this fleet joined or started it (a local Ray then stops; a cluster goes on)."""
        if self._connected:
            self._connected = False
            with contextlib.suppress(Exception):
                ray.shutdown()

    # ----- weights, counts --------------------------------------------------------------------------------
    def publish(self, agent: Agent, force: bool = False) -> None:
        """New weights for the samplers when ``weight_sync_every`` updates passed since the last publication."""
        version = int(agent.policy_version)
        if force or version - self._pushed_version >= self.weight_sync_every:
            flat = flat_parameters(self._params)
            self.coord.set_weights.remote(version, flat.numpy())  # ordered with later calls of this driver
            self._pushed_version = version

    def drain(self) -> None:
        """Counts from the coordinator; the episodes finished since the last call go into the tracker."""
        if self.closed or self.coord is None:
            return
        try:
            status = ray.get(self.coord.status.remote())
        except Exception as err:
            raise SamplerProcessError(f"lost the ray sampler coordinator ({first_line(err)})") from None
        for episode in status["episodes"]:
            self.tracker.add(*episode)
        status["episodes"] = []
        self.status = status

    @property
    def env_steps(self) -> int:
        return int(self.status["env_steps"])

    def resume(self, stream_offset: int, base_steps: list[int]) -> None:
        self.stream_offset, self.base_steps = stream_offset, list(base_steps)
        self.status["env_steps"] = sum(base_steps)
        self.status["env_steps_each"] = list(base_steps)

    def state(self) -> dict[str, Any]:
        """Env steps per slot, the end of the env streams used and the episode window (checkpoint entries)."""
        return {
            "env_steps": torch.tensor(self.status["env_steps_each"], dtype=torch.int64),
            "stream_end": streams_end(self.stream_offset, self.num_procs, self.attempts, self.ctx.world_size),
            "tracker": self.tracker.state_dict(),
        }

    # ----- supervision --------------------------------------------------------------------------------------
    def failed(self, idx: int, err: BaseException) -> None:
        """Sampler ``idx`` died or raised: replace it while ``sampler_restarts`` allows, else raise one line."""
        what = f"ray sampler actor {idx} of rank {self.ctx.rank} failed ({first_line(err)})"
        if self.restarts >= self.max_restarts:
            after = f" after {self.restarts} restart(s) (sampler_restarts={self.max_restarts})"
            raise SamplerProcessError(
                f"{what}{after if self.max_restarts else ''}; stopping the run"
            ) from None
        self.restarts += 1
        self.attempts[idx] += 1
        log.warning("%s; restarting it (restart %d of %d)", what, self.restarts, self.max_restarts)
        with contextlib.suppress(Exception):
            ray.kill(self.actors[idx])  # it raised rather than died: make sure it is gone
        ray.get(self.coord.restart_slot.remote(idx))
        self._spawn(idx)

    def check_placement(self) -> None:
        """Raise one line for a sampler actor not started in time: within :data:`PLACEMENT_TIMEOUT_S` while the
        cluster lacks its resources, within :data:`START_TIMEOUT_S` while it has them (a slow start)."""
        waiting = [(i, entry) for i, entry in enumerate(self._ready) if entry is not None]
        if not waiting:
            return
        ready, _ = ray.wait([ref for _, (ref, _) in waiting], num_returns=len(waiting), timeout=0)
        now = time.monotonic()
        late = []  # (slot, seconds waited) of the actors still starting
        for i, (ref, since) in waiting:
            if ref in ready:
                self._ready[i] = None
            else:
                late.append((i, now - since))
        i, waited = max(late, key=lambda entry: entry[1], default=(None, 0.0))
        if waited <= PLACEMENT_TIMEOUT_S:
            return
        if not fits(self.actor_options, ray.cluster_resources()):
            raise SamplerProcessError(
                f"ray sampler actor {i} of rank {self.ctx.rank} found no node with "
                f"{self.actor_options} for {PLACEMENT_TIMEOUT_S:.0f} s (a lost node, or ray_sampler_resources "
                "that no node offers); stopping the run"
            )
        if waited > START_TIMEOUT_S:
            raise SamplerProcessError(
                f"ray sampler actor {i} of rank {self.ctx.rank} has not started after {START_TIMEOUT_S:.0f} s "
                f"although the cluster has {self.actor_options} (workers too slow to start, or the cluster's "
                "CPUs held by other actors); stopping the run"
            )

    def node_ids(self, timeout: float = 30.0) -> list[str]:
        """The node each sampler actor runs on, as the actors reported when they started (waits for them)."""
        deadline = time.monotonic() + timeout
        while True:
            nodes = ray.get(self.coord.sampler_nodes.remote())
            if all(nodes) or time.monotonic() > deadline:
                return nodes
            time.sleep(0.1)
