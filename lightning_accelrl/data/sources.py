"""Named experience sources: ``ExperienceDataModule(sampler=NAME)`` builds the source registered as ``NAME``.

Built in: ``sync`` (rollouts or synchronous replay in this process), ``alternating`` (rollouts from two env
groups overlapping stepping and inference), ``async`` (sampler processes feeding a served table) and ``ray``
(Ray actors on any node: replay and asynchronous rollouts through a Ray-served table, on-policy rollouts collected
by all actors per batch). Register your own with :func:`register_source`, or pass
a factory ``(SourceContext) -> ExperienceSource`` as ``sampler``.
"""

from __future__ import annotations

from lightning_accelrl.data.source import ExperienceSource, SourceContext, SourceFactory
from lightning_accelrl.errors import ConfigError


def _sync(ctx: SourceContext) -> ExperienceSource:
    if ctx.needs.kind == "replay":
        from lightning_accelrl.data.replay import ReplaySource

        return ReplaySource(ctx)
    from lightning_accelrl.data.rollouts import RolloutSource

    return RolloutSource(ctx)


def _alternating(ctx: SourceContext) -> ExperienceSource:
    if ctx.needs.kind != "rollout":
        raise ConfigError(
            "sampler='alternating' collects rollouts; replay algorithms use sampler='sync', 'async' or 'ray'"
        )
    from lightning_accelrl.data.rollouts import RolloutSource

    return RolloutSource(ctx, alternating=True)


def _async(ctx: SourceContext) -> ExperienceSource:
    from lightning_accelrl.data.async_runner import AsyncRunner

    return AsyncRunner(ctx)


def _ray(ctx: SourceContext) -> ExperienceSource:
    """Replay and asynchronous rollouts: actors feed a Ray-served table; on-policy rollouts: every batch collected
    by all actors with the current weights. ``ray_rollouts: auto`` (the default) collects asynchronously for
    algorithms that correct for policy lag (``needs.lag_corrected``: APPO, AsyncA2C), on-policy for the others."""
    mode = ctx.settings.get("ray_rollouts", "auto")
    if mode not in ("auto", "on_policy", "async"):
        raise ConfigError(f"ray_rollouts must be auto, on_policy or async, got {mode!r}")
    if mode == "auto":
        mode = "async" if ctx.needs.lag_corrected else "on_policy"
    if ctx.needs.kind == "rollout" and mode == "on_policy":
        from lightning_accelrl.data.ray_rollouts import RayRolloutSource

        return RayRolloutSource(ctx)
    from lightning_accelrl.data.ray_runner import RayRunner

    return RayRunner(ctx)


_SOURCES: dict[str, SourceFactory] = {
    "sync": _sync,
    "alternating": _alternating,
    "async": _async,
    "ray": _ray,
}


def register_source(name: str, factory: SourceFactory) -> None:
    """Make ``ExperienceDataModule(sampler=name)`` build its source with ``factory(ctx)``."""
    _SOURCES[name] = factory


def source_names() -> list[str]:
    return list(_SOURCES)


def source_factory(sampler: str | SourceFactory) -> SourceFactory:
    """The factory ``sampler`` names (or ``sampler`` itself when it is a factory)."""
    if callable(sampler):
        return sampler
    if sampler not in _SOURCES:
        raise ConfigError(
            f"unknown sampler {sampler!r}; choose one of {', '.join(_SOURCES)} or pass a factory"
        )
    return _SOURCES[sampler]
