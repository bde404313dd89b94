"""The ``network`` argument of the algorithms: built-in names chosen by observation, or a user's network
(an ``nn.Module`` instance, or a class path with ``init_args``: see :mod:`lightning_accelrl.nets.interfaces`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.actor_critic import LOG_STD_KINDS, ActorCriticMLP
from lightning_accelrl.nets.interfaces import NetworkArg, RecordsInitArgs
from lightning_accelrl.nets.observations import dict_encoder
from lightning_accelrl.trusted import class_path, resolve_class

NETWORKS = ("auto", "mlp", "nature_cnn", "impala_cnn", "small_cnn")


def choose_network(spec: EnvSpec) -> str:
    """What ``auto`` means for ``spec``: the Nature CNN for Atari-sized frames, the small CNN for small images
    (e.g. 10x10 grids), else an MLP (Dict observations with image keys: an MLP over per-key encoders)."""
    if not spec.is_image:
        return "mlp"
    from lightning_accelrl.nets.cnn import auto_encoder

    return f"{auto_encoder(spec.observation_shape, spec.layout)}_cnn"


def check_builtin(network: str, spec: EnvSpec) -> str:
    """The built-in name to build (``auto`` resolved); one-line errors for unknown names or non-images."""
    if network not in NETWORKS:
        raise ConfigError(
            f"unknown network {network!r}; choose one of {', '.join(NETWORKS)}, an nn.Module, or "
            "{'class_path': ..., 'init_args': {...}}"
        )
    if network == "auto":
        return choose_network(spec)
    if network != "mlp" and not spec.is_image:
        raise ConfigError(
            f"network {network!r} needs image observations ([C, H, W] or [H, W, C]), got shape "
            f"{spec.observation_shape}"
        )
    return network


# ----- user networks ------------------------------------------------------------------------------------------
def network_argument(network: NetworkArg) -> tuple[str | dict[str, Any], nn.Module | None]:
    """(the plain form stored in hyper-parameters, the instance given in Python or None).

    An instance is stored as its class path, with its ``init_args`` if it records them
    (:class:`~lightning_accelrl.nets.interfaces.RecordsInitArgs`), else marked as given as an object.
    """
    if isinstance(network, nn.Module):
        stored: dict[str, Any] = {"class_path": class_path(type(network))}
        if isinstance(network, RecordsInitArgs):
            stored["init_args"] = dict(network.init_args)
        else:
            stored["given_as_object"] = True
        return stored, network
    if isinstance(network, str):
        return network, None
    if isinstance(network, dict) and isinstance(network.get("class_path"), str):
        unknown = set(network) - {"class_path", "init_args", "given_as_object"}
        init_args = network.get("init_args") or {}
        if unknown or not isinstance(init_args, dict):
            raise ConfigError(
                f"network {network!r}: give {{'class_path': 'pkg.Module', 'init_args': {{...}}}} (plain data)"
            )
        return {**network, "init_args": dict(init_args)} if "init_args" in network else dict(network), None
    raise ConfigError(
        f"network must be a name ({', '.join(NETWORKS)}), an nn.Module or {{'class_path': ..., 'init_args': "
        f"{{...}}}}, got {type(network).__name__}"
    )


def import_network_module(network: object) -> None:
    """Import the module of a user network's class path, for configs the user wrote (``accelrl fit``): trusted
    input. Checkpoints never come here: their class paths resolve among loaded classes only."""
    if not isinstance(network, dict) or not isinstance(network.get("class_path"), str):
        return
    import importlib

    module = network["class_path"].replace(":", ".").rpartition(".")[0]
    try:
        importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(
            f"network {network['class_path']!r}: cannot import module {module!r} ({exc})"
        ) from None


def build_user_network(network: dict[str, Any], spec: EnvSpec, **library_args: Any) -> nn.Module:
    """``cls(spec=spec, **library_args, **init_args)`` for a stored class path; the class must be loaded."""
    path = network["class_path"]
    if network.get("given_as_object"):
        raise ConfigError(
            f"the network {path} was given as an object whose constructor arguments are not recorded: pass "
            "network=... again (e.g. to load_from_checkpoint), or give it as {'class_path': ..., 'init_args': ...}"
        )
    cls = resolve_class(path, nn.Module, "network")
    try:
        return cls(spec=spec, **library_args, **network.get("init_args", {}))
    except TypeError as exc:
        raise ConfigError(
            f"network {path}: {exc} (it is built as {cls.__name__}(spec=EnvSpec, "
            f"{''.join(f'{k}=..., ' for k in library_args)}**init_args))"
        ) from None


def check_outputs(net: nn.Module, spec: EnvSpec, family: str, expected: tuple[tuple[int, ...], ...]) -> None:
    """One forward of two zero observations; a one-line error when the shapes are not the family's contract."""
    obs = torch.zeros(2, *spec.observation_shape, dtype=spec.observation_dtype)
    with torch.no_grad():
        out = net(obs)
    got = tuple(tuple(o.shape) for o in (out if isinstance(out, tuple) else (out,)))
    if got != expected:
        raise ConfigError(
            f"network {type(net).__name__} returns shapes {got} for 2 observations, but {family} needs "
            f"{expected} (see lightning_accelrl.nets.interfaces)"
        )


# ----- actor-critic ------------------------------------------------------------------------------------------
def build_actor_critic(
    spec: EnvSpec,
    network: str | dict[str, Any] = "auto",
    hidden: Sequence[int] = (64, 64),
    activation: str = "tanh",
    shared_trunk: bool = False,
    channels_last: bool = False,
    compile: bool = False,
    log_std: str = "state_independent",
    log_std_init: float = 0.0,
) -> nn.Module:
    """An actor-critic module with ``forward(obs) -> (policy params, value)`` and ``value(obs)``.

    ``auto``: see :func:`choose_network`. ``hidden``/``activation``/``shared_trunk``/``log_std``/``log_std_init``
    apply to the MLP; ``channels_last`` (memory format) and ``compile`` to the CNNs. A dict is a user network's
    class path.
    """
    check_log_std(spec, network, log_std, log_std_init)
    if isinstance(network, dict):
        return build_user_network(network, spec)
    network = check_builtin(network, spec)
    if network == "mlp":
        encoder = dict_encoder(spec, channels_last)
        return ActorCriticMLP(spec, hidden, activation, shared_trunk, encoder, log_std, log_std_init)
    if (log_std, log_std_init) != ("state_independent", 0.0):
        raise ConfigError(
            f"log_std={log_std!r}, log_std_init={log_std_init} are options of the MLP; the {network} network "
            "has a state-independent log-std starting at 0"
        )
    from lightning_accelrl.nets.cnn import ActorCriticCNN

    return ActorCriticCNN(spec, network.removesuffix("_cnn"), channels_last=channels_last, compile=compile)


def check_log_std(spec: EnvSpec, network: str | dict[str, Any], log_std: str, log_std_init: float) -> None:
    """One-line errors for log-std options that cannot apply: unknown kinds, discrete actions, user networks
    (which return their own log-std beside the mean)."""
    if log_std not in LOG_STD_KINDS:
        raise ConfigError(f"log_std must be one of {', '.join(LOG_STD_KINDS)}, got {log_std!r}")
    if (log_std, log_std_init) == ("state_independent", 0.0):
        return
    if spec.discrete:
        raise ConfigError(
            f"log_std={log_std!r}, log_std_init={log_std_init} apply to Box actions; this env's actions are "
            "discrete: leave them at their defaults"
        )
    if isinstance(network, dict):
        raise ConfigError(
            f"log_std={log_std!r}, log_std_init={log_std_init} apply to the built-in networks; the network "
            f"{network['class_path']} returns its own log-std beside the mean: leave them at their defaults"
        )
