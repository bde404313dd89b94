"""Categorical DQN (C51; Bellemare et al., 2017): a return distribution over a fixed support per action.

With ``double_q``, ``dueling``, ``n_step`` and ``prioritized`` it is "Rainbow without noisy nets" as in rlpyt.
The n-step target distribution r + γ^n·z is projected back onto the support; the loss is the cross-entropy
to the projection, which is also the priority (as in Rainbow).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from tensordict import TensorDict
from torch import nn

from lightning_accelrl.algos.dqn import DQN
from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import check
from lightning_accelrl.nets.factory import build_user_network
from lightning_accelrl.nets.q import QNetwork


def project_distribution(
    next_probs: torch.Tensor, reward: torch.Tensor, discount: torch.Tensor, support: torch.Tensor
) -> torch.Tensor:
    """Project the distribution of ``reward + discount · z`` (``next_probs`` over ``support``) onto ``support``.

    Shapes: next_probs [B, N], reward and discount [B], support [N]. Each atom's mass is split between the two
    nearest support points in proportion to its distance (Bellemare et al., 2017, Algorithm 1).
    """
    v_min, v_max = float(support[0]), float(support[-1])
    n = support.numel()
    delta = (v_max - v_min) / (n - 1)
    tz = (reward.unsqueeze(-1) + discount.unsqueeze(-1) * support).clamp(v_min, v_max)
    b = (tz - v_min) / delta
    lower, upper = b.floor().long(), b.ceil().long()
    # an atom landing exactly on a support point: give its mass to that point
    lower[(upper > 0) & (lower == upper)] -= 1
    upper[(lower < n - 1) & (lower == upper)] += 1
    projected = torch.zeros_like(next_probs)
    projected.scatter_add_(-1, lower, next_probs * (upper.to(b.dtype) - b))
    projected.scatter_add_(-1, upper, next_probs * (b - lower.to(b.dtype)))
    return projected


class CategoricalDQN(DQN):
    """C51: ``num_atoms`` atoms on [v_min, v_max]; all DQN options (double, dueling, n-step, prioritized) apply."""

    def __init__(self, num_atoms: int = 51, v_min: float = -10.0, v_max: float = 10.0, **kwargs: Any) -> None:
        check(num_atoms >= 2, f"num_atoms must be >= 2, got {num_atoms}")
        check(v_max > v_min, f"v_max must be > v_min, got v_min={v_min}, v_max={v_max}")
        super().__init__(**kwargs)
        network = self.hparams.network  # the plain form DQN stored, never a module
        self.save_hyperparameters(ignore=["network"])
        self.hparams["network"] = network
        self.register_buffer("support", torch.linspace(v_min, v_max, num_atoms), persistent=False)

    def make_q_network(self, spec: EnvSpec) -> nn.Module:
        """The built-in QNetwork, or the user's class path (``forward(obs) -> logits [N, num_actions, num_atoms]``)."""
        hp = self.hparams
        if isinstance(hp.network, dict):
            return build_user_network(hp.network, spec, num_atoms=hp.num_atoms)
        return QNetwork(
            spec, hp.network, hp.hidden, hp.activation, dueling=hp.dueling, num_atoms=hp.num_atoms
        )

    def q_output_shape(self, spec: EnvSpec) -> tuple[int, ...]:
        """Logits over the support per action."""
        return (spec.num_actions, self.hparams.num_atoms)

    def q_values(self, observation: torch.Tensor) -> torch.Tensor:
        """Expected returns: Σ_z softmax(logits)·z."""
        return (self.q(observation).softmax(-1) * self.support).sum(-1)

    def td_loss(self, batch: TensorDict) -> tuple[torch.Tensor, torch.Tensor]:
        logits, online_next = self.online_outputs(batch)
        action = batch["action"].long().reshape(-1, 1, 1).expand(-1, 1, logits.shape[-1])
        log_p = F.log_softmax(logits.gather(1, action).squeeze(1), -1)
        with torch.no_grad():
            target = self.target_distribution(batch, online_next)
        loss = -(target * log_p).sum(-1)
        return loss, loss.detach()

    @torch.no_grad()
    def target_distribution(self, batch: TensorDict, online_next: torch.Tensor | None = None) -> torch.Tensor:
        next_obs = batch["next", "observation"]
        next_probs = self.q_target(next_obs).softmax(-1)  # [B, A, N]
        if self.hparams.double_q:  # argmax of the online net's expected returns
            online_next = self.q(next_obs) if online_next is None else online_next
            next_q = (online_next.softmax(-1) * self.support).sum(-1)
        else:
            next_q = (next_probs * self.support).sum(-1)
        best = next_q.argmax(-1).reshape(-1, 1, 1).expand(-1, 1, next_probs.shape[-1])
        p = next_probs.gather(1, best).squeeze(1)
        reward = batch["next", "reward"].reshape(-1).to(p.dtype)
        discount = batch["bootstrap_discount"].reshape(-1).to(p.dtype)
        return project_distribution(p, reward, discount, self.support)
