"""One local Ray for a test module (NOTES.md): bound to loopback, no auth or usage stats, a small object store, a
short temp folder (Unix socket paths must stay short); a Ray started here is shut down and its folder removed.
Never ``ray stop`` (it would end other sessions' clusters)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from types import ModuleType


@contextlib.contextmanager
def local_ray(by_value: ModuleType | None = None) -> Iterator[None]:
    """``by_value``: a test module whose functions Ray workers must receive by value (they cannot import it)."""
    import ray

    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # bind 127.0.0.1 only
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if by_value is not None:
        import cloudpickle  # Ray's

        cloudpickle.register_pickle_by_value(by_value)
    started = not ray.is_initialized()
    if started:
        temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=100 * 2**20,
            _temp_dir=temp_dir,
            log_to_driver=False,
        )
    try:
        yield
    finally:
        if started:
            ray.shutdown()
            shutil.rmtree(temp_dir, ignore_errors=True)  # Ray leaves its session folder behind
