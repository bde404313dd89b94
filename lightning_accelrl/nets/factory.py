"""The ``network`` argument of the algorithms (SAC, TD3, DDPG: ``actor_network`` and ``critic_network``): built-in
names chosen by observation, or a user's network (an ``nn.Module`` instance, or a class path with ``init_args``:
see :mod:`lightning_accelrl.nets.interfaces`)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.actor_critic import LOG_STD_KINDS, ActorCriticMLP
from lightning_accelrl.nets.continuous import CriticList
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
def network_argument(
    network: NetworkArg, what: str = "network", names: Sequence[str] = NETWORKS
) -> tuple[str | dict[str, Any], nn.Module | None]:
    """(the plain form stored in hyper-parameters, the instance given in Python or None).

    An instance is stored as its class path, with its ``init_args`` if it records them
    (:class:`~lightning_accelrl.nets.interfaces.RecordsInitArgs`), else marked as given as an object.
    ``what``: the argument's name in errors; ``names``: the built-in names it accepts.
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
                f"{what} {network!r}: give {{'class_path': 'pkg.Module', 'init_args': {{...}}}} (plain data)"
            )
        return {**network, "init_args": dict(init_args)} if "init_args" in network else dict(network), None
    raise ConfigError(
        f"{what} must be a name ({', '.join(names)}), an nn.Module or {{'class_path': ..., 'init_args': "
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


def build_user_network(
    network: dict[str, Any], spec: EnvSpec, *, what: str = "network", **library_args: Any
) -> nn.Module:
    """``cls(spec=spec, **library_args, **init_args)`` for a stored class path; the class must be loaded.
    ``what``: the argument's name in errors."""
    path = network["class_path"]
    if network.get("given_as_object"):
        raise ConfigError(
            f"the {what} {path} was given as an object whose constructor arguments are not recorded: pass "
            f"{what}=... again (e.g. to load_from_checkpoint), or give it as {{'class_path': ..., 'init_args': ...}}"
        )
    cls = resolve_class(path, nn.Module, what)
    try:
        return cls(spec=spec, **library_args, **network.get("init_args", {}))
    except TypeError as exc:
        raise ConfigError(
            f"{what} {path}: {exc} (it is built as {cls.__name__}(spec=EnvSpec, "
            f"{''.join(f'{k}=..., ' for k in library_args)}**init_args))"
        ) from None


def check_outputs(
    net: nn.Module,
    spec: EnvSpec,
    family: str,
    expected: tuple[tuple[int, ...], ...],
    with_action: bool = False,
) -> None:
    """One forward of two zero observations (and two zero actions: ``with_action``, a continuous critic); a
    one-line error when the shapes are not the family's contract."""
    obs = torch.zeros(2, *spec.observation_shape, dtype=spec.observation_dtype)
    inputs = (obs, torch.zeros(2, spec.action_dim)) if with_action else (obs,)
    training = net.training
    try:
        with torch.no_grad():
            out = net.eval()(*inputs)  # eval mode: a probe must not move BatchNorm statistics
    except Exception as exc:  # noqa: BLE001 - any failure here is the network not fitting the contract
        called = "(obs, action)" if with_action else "(obs)"
        first_line = (str(exc).splitlines() or [""])[0]
        raise ConfigError(
            f"network {type(net).__name__} fails when {family} calls it as forward{called} on 2 zero "
            f"observations ({type(exc).__name__}: {first_line}); see lightning_accelrl.nets.interfaces"
        ) from None
    finally:
        net.train(training)
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


# ----- off-policy continuous control (SAC, TD3, DDPG) --------------------------------------------------------
CONTINUOUS_NETWORKS = ("mlp",)  # the built-in name of ``actor_network`` and ``critic_network``


def check_continuous_builtin(network: str | dict[str, Any], what: str) -> None:
    """``actor_network``/``critic_network``: the only built-in name is ``mlp`` (sized by ``*_hidden``)."""
    if isinstance(network, str) and network not in CONTINUOUS_NETWORKS:
        raise ConfigError(
            f"unknown {what} {network!r}; give 'mlp' (sized by actor_hidden/critic_hidden), an nn.Module or "
            "{'class_path': ..., 'init_args': {...}}"
        )


def build_continuous_actor(
    spec: EnvSpec,
    network: str | dict[str, Any],
    given: nn.Module | None,
    builtin: Callable[[], nn.Module],
    family: str,
    expected: tuple[tuple[int, ...], ...],
) -> nn.Module:
    """The actor: the instance given, the user's class path, or the built-in MLP (``builtin()``); a user's actor
    is checked against ``expected`` output shapes for two observations."""
    if not isinstance(network, dict):
        return builtin()
    actor = given if given is not None else build_user_network(network, spec, what="actor_network")
    check_outputs(actor, spec, family, expected)
    return actor


def build_continuous_critics(
    spec: EnvSpec,
    network: str | dict[str, Any],
    given: nn.Module | None,
    size: int,
    builtin: Callable[[], nn.Module],
    algorithm: str,
) -> nn.Module:
    """``size`` critics called as one ensemble (``[size, N]``): the built-in :class:`CriticEnsemble`
    (``builtin()``), or a user's Q-network built ``size`` times (the instance given is the first)."""
    if not isinstance(network, dict):
        return builtin()
    if given is not None and size > 1 and network.get("given_as_object"):
        raise ConfigError(
            f"{algorithm} builds {size} critics, but the critic_network instance {network['class_path']} records "
            "no init_args to build the others from: give it as {'class_path': ..., 'init_args': {...}}, set "
            "init_args on it (nets.interfaces.RecordsInitArgs), or set num_critics: 1"
        )
    critics = [given] if given is not None else []
    critics += [build_user_network(network, spec, what="critic_network") for _ in range(size - len(critics))]
    for critic in critics:
        check_outputs(critic, spec, f"{algorithm}'s critic", ((2, 1),), with_action=True)
    return CriticList(critics)
