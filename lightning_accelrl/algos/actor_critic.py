"""What the policy-gradient modules (PPO, A2C, APPO) share: the actor-critic network and how it acts.

Each algorithm file keeps its own hyper-parameters, optimizer and loss; acting is the same for all of them.
"""

from __future__ import annotations

import torch
from torch import nn

from lightning_accelrl.algos.base import RLModule
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.nets.actor_critic import ActionDist
from lightning_accelrl.nets.factory import build_actor_critic, check_outputs


class ActorCriticModule(RLModule):
    """An :class:`RLModule` with ``self.net`` (policy and value) built from the hyper-parameters ``network``,
    ``hidden``, ``activation``, ``shared_trunk`` and, for CNNs, ``channels_last`` and ``compile_network``.

    ``network`` may also be a user's actor-critic (an ``nn.Module``, or a class path with ``init_args``): see
    :class:`~lightning_accelrl.nets.interfaces.ActorCriticNetwork` for what it must return.
    """

    def __init__(self) -> None:
        super().__init__()
        self.net: nn.Module | None = None  # built in configure_model unless given as network=

    def build_networks(self, spec: EnvSpec) -> None:
        hp = self.hparams
        self.action_spec = spec  # how to read the policy parameters (see ActionDist.from_params)
        if self.net is None:
            self.net = self.make_actor_critic(spec)
        if isinstance(hp.network, dict):  # a user's network: check its outputs now, in one line
            width = spec.num_actions if spec.discrete else 2 * spec.action_dim
            check_outputs(self.net, spec, "an actor-critic", ((2, width), (2, 1)))

    def make_actor_critic(self, spec: EnvSpec) -> nn.Module:
        hp = self.hparams
        return build_actor_critic(
            spec,
            hp.network,
            hp.hidden,
            hp.activation,
            hp.shared_trunk,
            hp.get("channels_last", False),
            hp.get("compile_network", False),
        )

    def dist(self, params: torch.Tensor) -> ActionDist:
        return ActionDist.from_params(params, self.action_spec)

    def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batched forward for all envs: sampled actions, their log-probabilities and the state values."""
        params, value = self.net(observation)
        dist = self.dist(params)
        action = dist.sample()
        return {"action": action, "sample_log_prob": dist.log_prob(action), "state_value": value}

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        return self.net.value(observation)

    def policy(self, observation: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for evaluation: the mode of the policy, or a sample."""
        dist = self.dist(self.net(observation)[0])
        return dist.mode() if deterministic else dist.sample()
