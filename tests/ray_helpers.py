"""One local Ray for a test module, started as the library starts it (``start_local_ray``: loopback only, a per-run
token, no usage stats or dashboard) with a small object store; a Ray started here is shut down. Never ``ray stop``
(it would end other sessions' clusters)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def local_ray(by_value: ModuleType | None = None) -> Iterator[None]:
    """``by_value``: a test module whose functions Ray workers must receive by value (they cannot import it)."""
    import ray

    from lightning_accelrl.replay.ray_local import start_local_ray

    if (
        by_value is not None
    ):  # Ray pickles functions with its own copy of cloudpickle, Ray's libraries with this one
        import cloudpickle
        import ray.cloudpickle

        for pickler in (cloudpickle, ray.cloudpickle):
            if by_value.__name__ not in pickler.list_registry_pickle_by_value():
                pickler.register_pickle_by_value(by_value)
    started = start_local_ray(num_cpus=2, object_store_memory=100 * 2**20)
    try:
        yield
    finally:
        if started:
            ray.shutdown()


@contextlib.contextmanager
def loopback_cluster(**sampler_node: float) -> Iterator[tuple[object, object]]:
    """A two-node Ray cluster on this machine, every node on 127.0.0.1 with the per-run token of
    ``start_local_ray``: a head with 1 CPU (the learner's node: table and coordinator) and a second node with
    2 CPUs and the custom resources ``sampler_node`` (e.g. ``sampler_node=2``). Yields ``(cluster, node)``;
    ``cluster.add_node``/``remove_node`` add and lose nodes. Everything stops at the end (and if this process dies)."""
    import tempfile

    import ray
    from ray.cluster_utils import Cluster

    from lightning_accelrl.replay.ray_local import loopback_ray_env, reaped_with_this_process

    loopback_ray_env()
    folder = tempfile.mkdtemp(prefix="accelrl-rc-", dir="/tmp")
    small = {"object_store_memory": 80 * 2**20}
    # Ray's Cluster writes its address file to Ray's default folder ($RAY_TMPDIR/ray, else /tmp/ray) whatever the
    # head's temp_dir, and fails where that folder was never made (a machine that never ran Ray): point the
    # default at this run's folder, so nothing lands in /tmp/ray either.
    os.makedirs(os.path.join(folder, "ray"))
    saved = os.environ.get("RAY_TMPDIR")
    os.environ["RAY_TMPDIR"] = folder
    with reaped_with_this_process(folder), _restored("RAY_TMPDIR", saved):
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": folder, **small},
        )
        try:
            node = cluster.add_node(num_cpus=2, resources=dict(sampler_node), **small)
            ray.init(address=cluster.address, log_to_driver=False)
            yield cluster, node
        finally:
            ray.shutdown()
            cluster.shutdown()


@contextlib.contextmanager
def _restored(name: str, value: str | None) -> Iterator[None]:
    """Put the environment variable ``name`` back to ``value`` (unset for None) on the way out."""
    try:
        yield
    finally:
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
