"""What a user's network must provide, per algorithm family, and how it is given.

``network=`` of every algorithm (SAC, TD3 and DDPG: ``actor_network=`` and ``critic_network=``, built-in name
``"mlp"`` only) accepts a built-in name (``"auto"``, ``"mlp"``, ``"nature_cnn"``,
``"impala_cnn"``, ``"small_cnn"``), an ``nn.Module`` instance (Python), or ``{"class_path": "mypkg.nets.MyNet",
"init_args": {...}}`` (Python, YAML or the command line). A class path is built as
``MyNet(spec=env_spec, **init_args)`` (C51 adds ``num_atoms=``), once the env spec is known; checkpoints store
the class path and ``init_args``, and reloading looks the class up among loaded classes only (import your module
first, e.g. ``accelrl evaluate --import mypkg.nets``): a checkpoint never imports anything.

Observations reach the network as the env adapter delivers them (see ``EnvSpec``): ``[N, *observation_shape]``
(N envs when acting, a minibatch when learning) in the env's dtype (uint8, bool, float: cast and scale them
yourself); ``Dict`` observations as one float vector whose keys ``spec.observation_parts`` locates.
"""

from __future__ import annotations

from typing import Any, Protocol, Union, runtime_checkable

import torch
from torch import nn

#: the type of every algorithm's ``network`` argument
NetworkArg = Union[str, dict[str, Any], nn.Module]  # noqa: UP007 - jsonargparse reads the Union


class ActorCriticNetwork(Protocol):
    """PPO, A2C, APPO.

    ``forward(obs) -> (policy_params, value)``: ``policy_params`` are the logits ``[N, num_actions]`` for
    ``Discrete`` actions, the concatenated logits of every dimension ``[N, sum(action_nvec)]`` for
    ``MultiDiscrete``, and mean and log-std side by side ``[N, 2 * action_dim]`` for ``Box``; ``value`` is
    ``[N, 1]``. ``value(obs) -> [N, 1]`` alone (used for bootstrapping).
    """

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...

    def value(self, obs: torch.Tensor) -> torch.Tensor: ...


class QValueNetwork(Protocol):
    """DQN: ``forward(obs) -> Q-values [N, num_actions]`` (``Discrete`` actions)."""

    def __call__(self, obs: torch.Tensor) -> torch.Tensor: ...


class DistributionalQNetwork(Protocol):
    """C51: ``forward(obs) -> logits [N, num_actions, num_atoms]`` over the algorithm's fixed support."""

    def __call__(self, obs: torch.Tensor) -> torch.Tensor: ...


# Off-policy continuous control (SAC, TD3, DDPG): ``actor_network=`` and ``critic_network=``. Actions cross these
# networks in the normalized space ``[-1, 1]^action_dim``; the library maps them to the env's Box bounds.


class SquashedGaussianPolicyNetwork(Protocol):
    """SAC's actor: ``forward(obs) -> (mean, log_std)``, each ``[N, action_dim]``, of the Gaussian over the
    pre-squash action ``u``. The library samples ``u``, squashes it with ``tanh`` and corrects the log-prob; bound
    the log-std yourself (the built-in MLP maps it smoothly into ``[-5, 2]``)."""

    def __call__(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


class DeterministicPolicyNetwork(Protocol):
    """TD3's and DDPG's actor: ``forward(obs) -> action [N, action_dim]`` in ``[-1, 1]`` (end with ``tanh``)."""

    def __call__(self, obs: torch.Tensor) -> torch.Tensor: ...


class ContinuousQNetwork(Protocol):
    """One critic of SAC, TD3 or DDPG: ``forward(obs, action) -> Q [N, 1]`` for normalized actions
    ``[N, action_dim]``. The library builds ``num_critics`` of them (each initialised afresh) and their targets."""

    def __call__(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class RecordsInitArgs(Protocol):
    """A network instance that records its constructor arguments (plain data, without ``spec``) in
    ``init_args``: its checkpoints rebuild it from its class path and these. Other instances must be passed
    again as ``network=`` when loading (and a critic given as an instance must record them when the algorithm
    has more than one critic: the others are built from them)."""

    init_args: dict[str, Any]
