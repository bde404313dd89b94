"""Deep Q-Networks (Mnih et al., 2015) with the options Rainbow combined (minus noisy nets), as a LightningModule.

Options: ``double_q`` (van Hasselt et al., 2016), ``dueling`` (Wang et al., 2016), ``n_step`` returns (built at
insert time by the data module), prioritized replay (Schaul et al., 2016) through the table's Prioritized
selector with annealed importance weights and |TD-error| priority updates. Each training batch is one
``table.sample(batch_size)``; the data module's sample-to-insert limiter sets the replay ratio.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn
from typing_extensions import override

from lightning_accelrl.algos.base import RLModule, anneal, replay_needs, replay_updates
from lightning_accelrl.algos.large_batch import LrScaling, scaled_lr, scaled_period, scaled_tau
from lightning_accelrl.data.needs import ExperienceNeeds
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import check
from lightning_accelrl.nets.factory import build_user_network, check_outputs, network_argument
from lightning_accelrl.nets.interfaces import NetworkArg
from lightning_accelrl.nets.q import QNetwork


def linear_schedule(start: float, end: float, fraction: float, progress: float) -> float:
    """``start`` → ``end`` linearly over the first ``fraction`` of training, then ``end``."""
    if fraction <= 0:
        return end
    return start + (end - start) * min(1.0, progress / fraction)


class DQN(RLModule):
    """DQN family on replay tables: double, dueling, n-step, prioritized (rlpyt's "Rainbow minus noisy nets" with C51).

    ``network``: ``"auto"``/``"mlp"``/``"nature_cnn"``/``"impala_cnn"``/``"small_cnn"``, an ``nn.Module`` or a
    class path with ``init_args`` (``forward(obs) -> Q [N, num_actions]``; see ``lightning_accelrl.nets.interfaces``).
    """

    def __init__(
        self,
        lr: float = 1e-3,
        gamma: float = 0.99,
        n_step: int = 1,
        bootstrap_truncated: bool = True,
        updates_per_batch: int = 1,
        double_q: bool = False,
        dueling: bool = False,
        target_update_period: int = 250,
        target_tau: float = 1.0,
        exploration_initial: float = 1.0,
        exploration_final: float = 0.05,
        exploration_fraction: float = 0.1,
        huber_delta: float = 1.0,
        max_grad_norm: float = 10.0,
        anneal_lr: bool = False,
        adam_eps: float = 1.5e-4,
        prioritized: bool = False,
        priority_exponent: float = 0.6,
        importance_beta_initial: float = 0.4,
        importance_beta_final: float = 1.0,
        priority_epsilon: float = 1e-6,
        lr_scaling: LrScaling = "none",
        reference_batch_size: int = 32,
        network: NetworkArg = "auto",
        hidden: Sequence[int] = (256, 256),
        activation: str = "relu",
        env_spec: dict | None = None,
    ) -> None:
        super().__init__()
        check(lr > 0, f"lr must be > 0, got {lr}")
        check(0 < gamma <= 1, f"gamma must be in (0, 1], got {gamma}")
        check(n_step >= 1, f"n_step must be >= 1, got {n_step}")
        check(updates_per_batch >= 1, f"updates_per_batch must be >= 1, got {updates_per_batch}")
        check(target_update_period >= 1, f"target_update_period must be >= 1, got {target_update_period}")
        check(0 < target_tau <= 1, f"target_tau must be in (0, 1], got {target_tau}")
        check(
            lr_scaling in ("none", "linear", "sqrt"),
            f"lr_scaling must be none, linear or sqrt, got {lr_scaling!r}",
        )
        check(reference_batch_size >= 1, f"reference_batch_size must be >= 1, got {reference_batch_size}")
        check(
            0 <= exploration_final <= 1 and 0 <= exploration_initial <= 1,
            "exploration rates must be in [0, 1]",
        )
        check(max_grad_norm > 0, f"max_grad_norm must be > 0, got {max_grad_norm}")
        check(priority_exponent >= 0, f"priority_exponent must be >= 0, got {priority_exponent}")
        network, self.q = network_argument(network)
        self.save_hyperparameters(ignore=["network"])  # a module never goes into the hyper-parameters (nor
        self.hparams["network"] = network  # a subclass's **kwargs): its plain form, a name or a class path
        self.updates = 0

    # ----- what the data module must provide ------------------------------------------------------------
    @override
    def experience_needs(self) -> ExperienceNeeds:
        """Replay of n-step transitions of a discrete-action env, prioritized when asked."""
        hp = self.hparams
        return replay_needs(
            hp, prioritized=hp.prioritized, priority_exponent=hp.priority_exponent, actions="discrete"
        )

    def build_networks(self, spec: EnvSpec) -> None:
        self.num_actions = spec.num_actions
        given = self.q  # an nn.Module passed as network=, else None
        self.q = self.make_q_network(spec) if given is None else given
        self.q_target = self.make_q_network(spec) if given is None else copy.deepcopy(given)
        self.q_target.load_state_dict(self.q.state_dict())
        self.q_target.requires_grad_(False)
        if isinstance(self.hparams.network, dict):  # a user's network: check its outputs now, in one line
            check_outputs(self.q, spec, type(self).__name__, ((2, *self.q_output_shape(spec)),))

    def q_output_shape(self, spec: EnvSpec) -> tuple[int, ...]:
        """What the Q-network returns per observation: a Q-value per action."""
        return (spec.num_actions,)

    def make_q_network(self, spec: EnvSpec) -> nn.Module:
        """The built-in QNetwork, or the user's class path (``forward(obs) -> Q [N, num_actions]``)."""
        hp = self.hparams
        if isinstance(hp.network, dict):
            return build_user_network(hp.network, spec)
        return QNetwork(spec, hp.network, hp.hidden, hp.activation, dueling=hp.dueling)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.q.parameters(), lr=self.hparams.lr, eps=self.hparams.adam_eps, fused=self.fused_optimizers
        )

    # ----- acting -------------------------------------------------------------------------------------------
    @property
    def epsilon(self) -> float:
        hp = self.hparams
        return linear_schedule(
            hp.exploration_initial, hp.exploration_final, hp.exploration_fraction, self.progress
        )

    def q_values(self, observation: torch.Tensor) -> torch.Tensor:
        return self.q(observation)

    def act(self, observation: torch.Tensor) -> dict[str, torch.Tensor]:
        """ε-greedy over all envs in one batched forward."""
        greedy = self.q_values(observation).argmax(-1)
        eps = self.epsilon
        if eps <= 0:
            return {"action": greedy}
        explore = torch.rand(greedy.shape, device=greedy.device) < eps
        random = torch.randint_like(greedy, self.num_actions)
        return {"action": torch.where(explore, random, greedy)}

    def policy(self, observation: torch.Tensor, deterministic: bool = True) -> torch.Tensor:
        return self.q_values(observation).argmax(-1) if deterministic else self.act(observation)["action"]

    # ----- learning -----------------------------------------------------------------------------------------
    def td_loss(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample Huber loss and |TD error| against the (double-)Q n-step target."""
        hp = self.hparams
        q_obs, online_next = self.online_outputs(batch)
        q = q_obs.gather(-1, batch["action"].long().unsqueeze(-1)).squeeze(-1)
        with torch.no_grad():
            target = self.target_values(batch, online_next)
        td = target - q
        return F.huber_loss(q, target, reduction="none", delta=hp.huber_delta), td.abs().detach()

    def online_outputs(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Online-network outputs for s_t (with gradients) and, for double-Q, for s_{t+n} (without).

        Two forwards, not one over ``cat([s_t, s_{t+n}])``: the concatenated forward would carry the s_{t+n} half
        through the backward matmuls too (measured ~20-25% slower per update for 64-256 wide MLPs on CPU)."""
        q_obs = self.q(batch["observation"])
        if not self.hparams.double_q:
            return q_obs, None
        with torch.no_grad():
            return q_obs, self.q(batch["next", "observation"])

    @torch.no_grad()
    def target_values(self, batch: TensorDict, online_next: torch.Tensor | None = None) -> torch.Tensor:
        """r^(n) + γ^n · Q_target(s_{t+n}, a*), a* = argmax of the online net (double) or of the target net."""
        next_obs = batch["next", "observation"]
        next_q_target = self.q_target(next_obs)
        if self.hparams.double_q:
            online_next = self.q(next_obs) if online_next is None else online_next
            best = online_next.argmax(-1, keepdim=True)
        else:
            best = next_q_target.argmax(-1, keepdim=True)
        next_q = next_q_target.gather(-1, best).squeeze(-1)
        reward = batch["next", "reward"].reshape(next_q.shape)
        return reward + batch["bootstrap_discount"].reshape(next_q.shape) * next_q

    def importance_weights(self, batch: TensorDict) -> torch.Tensor:
        """(N·P)^(−β), normalised by the batch maximum; ones without prioritized replay (whose loss skips them)."""
        hp = self.hparams
        if not hp.prioritized or "probability" not in batch.keys():  # noqa: SIM118
            return torch.ones(batch.batch_size[0], device=self.device)
        beta = linear_schedule(hp.importance_beta_initial, hp.importance_beta_final, 1.0, self.progress)
        n_p = batch["table_size"].to(torch.float64) * batch["probability"].to(torch.float64)
        w = n_p.clamp_min(1e-12).pow(-beta)
        return (w / w.max()).to(torch.float32).to(self.device)

    @override
    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        """One update per replay sample of the batch (``updates_per_batch`` of them), then the logs."""
        for sample in replay_updates(batch):
            loss, td_abs, lr = self.update(sample)
        if self.logs_this_batch():
            self.log_rollout_stats(
                {
                    "train/loss": loss.detach(),
                    "train/q_abs_td": td_abs.mean(),
                    "train/lr": lr,
                    "train/epsilon": self.epsilon,
                }
            )

    def update(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor, float]:
        """One gradient step on a replay sample ``[B]``; returns the loss, |TD error| per item and the lr."""
        hp = self.hparams
        opt = self.optimizers()
        lr = anneal(opt.optimizer, self.base_lr(batch.batch_size[0]), self.progress, hp.anneal_lr)
        losses, td_abs = self.td_loss(batch)
        loss = (self.importance_weights(batch) * losses).mean() if hp.prioritized else losses.mean()

        self.gradient_step(opt, loss, hp.max_grad_norm)
        self.updates += 1
        self.policy_version += 1

        if hp.prioritized:
            self.update_priorities(batch["key"], td_abs + hp.priority_epsilon)
        self.update_target(batch.batch_size[0])
        return loss, td_abs, lr

    @torch.no_grad()
    def base_lr(self, batch_size: int) -> float:
        """``lr``, scaled by the large-batch rule when ``lr_scaling`` is set (``lr`` is tuned at the reference)."""
        hp = self.hparams
        if hp.lr_scaling == "none":
            return hp.lr
        return scaled_lr(hp.lr, batch_size, hp.reference_batch_size, hp.lr_scaling)

    @torch.no_grad()  # an in-place average under autograd would chain a graph node per update onto the target
    def update_target(self, batch_size: int) -> None:
        """Hard copy every ``target_update_period`` updates, or Polyak averaging with ``target_tau < 1`` every update.

        With ``lr_scaling`` set, both keep their time constant in env steps (see ``algos/large_batch.py``)."""
        hp = self.hparams
        scale = hp.lr_scaling != "none"
        if hp.target_tau < 1.0:
            tau = scaled_tau(hp.target_tau, batch_size, hp.reference_batch_size) if scale else hp.target_tau
            torch._foreach_lerp_(list(self.q_target.parameters()), list(self.q.parameters()), tau)
            return
        period = hp.target_update_period
        if scale:
            period = scaled_period(period, batch_size, hp.reference_batch_size)
        if self.updates % period == 0:
            self.q_target.load_state_dict(self.q.state_dict())

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["accelrl"]["updates"] = self.updates

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_load_checkpoint(checkpoint)
        self.updates = int(checkpoint.get("accelrl", {}).get("updates", 0))
