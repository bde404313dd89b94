"""What the policy-gradient modules (PPO, A2C, APPO) share: the actor-critic network, how it acts, and the
running statistics of observations and returns (the ``normalize_observations``/``normalize_rewards`` options).

Each algorithm file keeps its own hyper-parameters, optimizer and loss; acting is the same for all of them.
"""

from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import nn

from lightning_accelrl.algos.base import RLModule
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.actor_critic import ActionDist
from lightning_accelrl.nets.factory import build_actor_critic, check_log_std, check_outputs
from lightning_accelrl.nets.normalization import RunningMeanStd, discounted_returns


class ActorCriticModule(RLModule):
    """An :class:`RLModule` with ``self.net`` (policy and value) built from the hyper-parameters ``network``,
    ``hidden``, ``activation``, ``shared_trunk``, ``log_std``, ``log_std_init`` and, for CNNs, ``channels_last``
    and ``compile_network``.

    ``network`` may also be a user's actor-critic (an ``nn.Module``, or a class path with ``init_args``): see
    :class:`~lightning_accelrl.nets.interfaces.ActorCriticNetwork` for what it must return.

    ``normalize_observations``: the network sees observations normalized by their running mean and variance
    (``obs_rms``, buffers of the module: saved in checkpoints, shipped to samplers with the weights, applied in
    :meth:`act`, :meth:`value` and :meth:`policy`); the algorithm calls :meth:`update_observation_statistics`
    after its gradient updates. ``normalize_rewards``: :meth:`scaled_rewards` divides the rollout's rewards by
    the running std of the per-env discounted return (``return_rms``).
    """

    def __init__(self) -> None:
        super().__init__()
        self.net: nn.Module | None = None  # built in configure_model unless given as network=
        self.obs_rms: RunningMeanStd | None = None  # normalize_observations: built with the network
        self.return_rms: RunningMeanStd | None = None  # normalize_rewards: built with the network
        # normalize_rewards: each env's discounted return so far, carried from one rollout to the next. Not
        # checkpointed: envs restart their episodes on resume, so the return restarts at 0 with them.
        self.running_return: torch.Tensor | None = None

    def build_networks(self, spec: EnvSpec) -> None:
        hp = self.hparams
        self.action_spec = spec  # how to read the policy parameters (see ActionDist.from_params)
        check_log_std(spec, hp.network, hp.get("log_std", "state_independent"), hp.get("log_std_init", 0.0))
        if self.net is None:
            self.net = self.make_actor_critic(spec)
        if isinstance(hp.network, dict):  # a user's network: check its outputs now, in one line
            width = spec.num_actions if spec.discrete else 2 * spec.action_dim
            check_outputs(self.net, spec, "an actor-critic", ((2, width), (2, 1)))
        if hp.get("normalize_observations", False):
            if spec.is_image:
                raise ConfigError(
                    f"normalize_observations applies to vector observations, not images {spec.observation_shape} "
                    "(the CNNs scale pixels themselves): leave it off"
                )
            self.obs_rms = RunningMeanStd(spec.observation_shape)
        if hp.get("normalize_rewards", False):
            self.return_rms = RunningMeanStd(())

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
            hp.get("log_std", "state_independent"),
            hp.get("log_std_init", 0.0),
        )

    def dist(self, params: torch.Tensor) -> ActionDist:
        return ActionDist.from_params(params, self.action_spec)

    # ----- acting: raw observations in (normalized here when normalize_observations) -----------------------
    def normalize(self, observation: torch.Tensor) -> torch.Tensor:
        """What the network sees: the observation, normalized by the running statistics when enabled."""
        return observation if self.obs_rms is None else self.obs_rms.normalize(observation)

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(policy parameters, state values [N, 1]) of raw observations [N, *obs_shape]."""
        return self.net(self.normalize(observation))

    def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
        """One batched forward for all envs: sampled actions, their log-probabilities and the state values.

        Box actions are the raw Gaussian samples: the env adapter clips what it sends to the env to the bounds,
        and the rollout keeps the unclipped sample, whose log-probability is the one recorded.
        """
        params, value = self(observation)
        dist = self.dist(params)
        action = dist.sample()
        return {"action": action, "sample_log_prob": dist.log_prob(action), "state_value": value}

    def value(self, observation: torch.Tensor) -> torch.Tensor:
        return self.net.value(self.normalize(observation))

    def policy(self, observation: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        """Actions for evaluation: the mode of the policy (the Gaussian's mean), or a sample."""
        dist = self.dist(self(observation)[0])
        return dist.mode() if deterministic else dist.sample()

    # ----- running statistics (learner side) --------------------------------------------------------------
    def all_sum(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` summed over the DDP ranks (itself on one process): every rank's statistics stay identical."""
        if self._trainer is None or self.trainer.world_size == 1:
            return x
        return self.trainer.strategy.reduce(x, reduce_op="sum")

    def update_observation_statistics(self, batch: TensorDict) -> None:
        """Fold the rollout's observations into ``obs_rms``: called after the update, so a rollout is collected
        and trained on with the same statistics (PPO's importance ratio starts at exactly 1)."""
        if self.obs_rms is not None:
            self.obs_rms.update(batch["observation"], self.all_sum)

    def scaled_rewards(self, batch: TensorDict, gamma: float) -> torch.Tensor:
        """The rollout's rewards ``[T, B, ...]``, divided by the running std of the discounted return and
        clipped to ±10 when ``normalize_rewards`` (as ``VecNormalize``); as they are otherwise."""
        reward = batch["next", "reward"]
        if self.return_rms is None:
            return reward
        if self.running_return is None or self.running_return.shape != reward.shape[1:]:
            self.running_return = torch.zeros(reward.shape[1:], dtype=torch.float64, device=reward.device)
        returns, self.running_return = discounted_returns(
            reward, batch["next", "done"], gamma, self.running_return
        )
        self.return_rms.update(returns, self.all_sum)
        return self.return_rms.scale(reward)
