"""One local Ray for a test module, started as the library starts it (``start_local_ray``: loopback only, a per-run
token, no usage stats or dashboard) with a small object store; a Ray started here is shut down. Never ``ray stop``
(it would end other sessions' clusters)."""

from __future__ import annotations

import contextlib
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
