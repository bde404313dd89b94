"""Asynchronous PPO (APPO): PPO's clipped surrogate on rollout segments from lagged policies, corrected by V-trace.

With ``sampler: async`` the segments come from sampler processes acting with weights up to a few updates old
(the behaviour policy μ). Each update:

1. evaluates the current policy π and value V on the segment (no gradient) and computes V-trace targets
   ``v_s`` and advantages ``r_t + γ v_{t+1} − V(x_t)`` (Espeholt et al., 2018, IMPALA, eq. 1 and §4.2) with the
   truncated importance weights ρ_t = min(ρ̄, π/μ), c_t = λ·min(c̄, π/μ);
2. runs ``update_epochs`` passes of shuffled minibatches of PPO's clipped surrogate with the ratio π_θ/μ taken
   against the **behaviour** policy (as Sample Factory's APPO): the ratio is the importance weight of the
   off-policy data, and its clip keeps each update in a trust region around the policy that acted. Value
   regression on ``v_s``.

With no lag (π = μ) and λ = 1, V-trace targets are the n-step bootstrapped returns (GAE with λ = 1), so on the
synchronous sampler APPO is PPO with GAE(λ). **Async A2C** (the A3C spirit, batched) is the sibling config
``update_epochs: 1``, one minibatch per segment (``minibatch_size`` ≥ T·B) and a clip too wide to act
(``clip_coef: 10``): one importance-weighted A2C gradient step per segment with V-trace advantages.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict import TensorDict
from typing_extensions import override

from lightning_accelrl.algos.actor_critic import ActorCriticModule
from lightning_accelrl.algos.base import anneal
from lightning_accelrl.algos.pg_losses import clip_fraction, loss_clipped_surrogate, loss_value, normalized
from lightning_accelrl.data.needs import ExperienceNeeds
from lightning_accelrl.errors import check
from lightning_accelrl.nets.actor_critic import LOG_STD_KINDS
from lightning_accelrl.nets.factory import network_argument
from lightning_accelrl.nets.interfaces import NetworkArg


def vtrace(
    log_rho: torch.Tensor,
    reward: torch.Tensor,
    value: torch.Tensor,
    next_value: torch.Tensor,
    done: torch.Tensor,
    terminated: torch.Tensor,
    gamma: float,
    lmbda: float = 1.0,
    rho_clip: float = 1.0,
    c_clip: float = 1.0,
    pg_rho_clip: float | None = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """V-trace targets and policy-gradient advantages over time-major tensors ``[T, B]`` (or ``[T, B, 1]``).

    ``log_rho`` = log π(a_t|x_t) − log μ(a_t|x_t); ``value`` = V(x_t); ``next_value`` = V(x_{t+1}) for every step,
    with the true final observation's value where an episode was truncated (so bootstrapping stops only at
    termination); ``done`` cuts the trace at every episode end. Returns ``(vs, pg_advantage)``
    (``pg_rho_clip=None``: the advantage without the importance weight ρ^pg, for a surrogate that carries it)::

        δ_t   = ρ_t (r_t + γ (1 − term_t) V(x_{t+1}) − V(x_t))
        vs_t  = V(x_t) + δ_t + γ c_t (1 − done_t) (vs_{t+1} − V(x_{t+1}))
        adv_t = ρ^pg_t (r_t + γ (1 − term_t) vs'_{t+1} − V(x_t)),  vs'_{t+1} = vs_{t+1} within the episode and
                                                                      segment, else V(x_{t+1})
    """
    rho = log_rho.exp()
    clipped_rho = rho.clamp(max=rho_clip)
    cs = lmbda * rho.clamp(max=c_clip)
    not_terminated = (~terminated).to(reward.dtype)
    not_done = (~done).to(reward.dtype)
    delta = clipped_rho * (reward + gamma * not_terminated * next_value - value)
    acc = torch.zeros_like(delta)  # vs_t − V(x_t)
    last = torch.zeros_like(delta[0])
    for t in range(delta.shape[0] - 1, -1, -1):
        last = delta[t] + gamma * cs[t] * not_done[t] * last
        acc[t] = last
    vs = value + acc
    # vs_{t+1} where the next step continues this episode inside the segment, V(x_{t+1}) otherwise
    next_acc = torch.zeros_like(acc)
    next_acc[:-1] = acc[1:] * not_done[:-1]
    vs_next = next_value + next_acc
    pg_adv = reward + gamma * not_terminated * vs_next - value
    if pg_rho_clip is not None:
        pg_adv = rho.clamp(max=pg_rho_clip) * pg_adv
    return vs, pg_adv


class APPO(ActorCriticModule):
    """PPO on (possibly lagged) rollout segments with V-trace targets and advantages.

    ``normalize_observations``, ``log_std``, ``log_std_init``: as :class:`PPO`'s (the sampler processes receive
    the observation statistics with the weights). No ``normalize_rewards``: segments of several sampler
    processes interleave, so no per-env discounted return runs from one segment to the next.
    """

    def __init__(
        self,
        lr: float = 3e-4,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_coef: float = 0.2,
        vtrace_rho_clip: float = 1.0,
        vtrace_c_clip: float = 1.0,
        value_coef: float = 0.5,
        entropy_coef: float = 0.0,
        update_epochs: int = 4,
        minibatch_size: int = 256,
        max_grad_norm: float = 0.5,
        normalize_advantage: bool = True,
        anneal_lr: bool = True,
        adam_eps: float = 1e-5,
        normalize_observations: bool = False,
        log_std: str = "state_independent",
        log_std_init: float = 0.0,
        network: NetworkArg = "auto",
        hidden: Sequence[int] = (64, 64),
        activation: str = "tanh",
        shared_trunk: bool = False,
        env_spec: dict | None = None,
    ) -> None:
        super().__init__()
        check(lr > 0, f"lr must be > 0, got {lr}")
        check(0 < gamma <= 1, f"gamma must be in (0, 1], got {gamma}")
        check(0 <= gae_lambda <= 1, f"gae_lambda must be in [0, 1], got {gae_lambda}")
        check(clip_coef > 0, f"clip_coef must be > 0, got {clip_coef}")
        check(min(vtrace_rho_clip, vtrace_c_clip) > 0, "V-trace clips must be > 0")
        check(update_epochs >= 1, f"update_epochs must be >= 1, got {update_epochs}")
        check(minibatch_size >= 1, f"minibatch_size must be >= 1, got {minibatch_size}")
        check(max_grad_norm > 0, f"max_grad_norm must be > 0, got {max_grad_norm}")
        check(log_std in LOG_STD_KINDS, f"log_std must be one of {', '.join(LOG_STD_KINDS)}, got {log_std!r}")
        network, self.net = network_argument(network)
        self.save_hyperparameters(ignore=["network"])  # a module never goes into the hyper-parameters (nor
        self.hparams["network"] = network  # a subclass's **kwargs): its plain form, a name or a class path

    @override
    def experience_needs(self) -> ExperienceNeeds:
        """Rollout segments with the next observations (values are recomputed with the current network)."""
        return ExperienceNeeds(kind="rollout", next_observation=True, lag_corrected=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            self.parameters(), lr=self.hparams.lr, eps=self.hparams.adam_eps, fused=self.fused_optimizers
        )

    # acting: ActorCriticModule.act, one batched forward for all envs
    # ----- learning -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def targets(self, batch: TensorDict) -> tuple[torch.Tensor, ...]:
        """V-trace targets and advantages [T, B] with the current network (the surrogate's ratio carries ρ)."""
        hp = self.hparams
        T, B = batch.batch_size
        obs = batch["observation"].flatten(0, 1)
        params, value = self(obs)
        log_pi = self.dist(params).log_prob(batch["action"].flatten(0, 1)).reshape(T, B)
        next_value = self.value(batch["next", "observation"].flatten(0, 1)).reshape(T, B)
        vs, adv = vtrace(
            log_pi - batch["sample_log_prob"].reshape(T, B),
            batch["next", "reward"].reshape(T, B),
            value.reshape(T, B),
            next_value,
            batch["next", "done"].reshape(T, B),
            batch["next", "terminated"].reshape(T, B),
            hp.gamma,
            hp.gae_lambda,
            hp.vtrace_rho_clip,
            hp.vtrace_c_clip,
            pg_rho_clip=None,
        )
        return vs, adv

    def training_step(self, batch: TensorDict, batch_idx: int) -> None:
        hp = self.hparams
        opt = self.optimizers()
        lr = anneal(opt.optimizer, hp.lr, self.progress, hp.anneal_lr)

        vs, advantages = self.targets(batch)
        observations = batch["observation"].flatten(0, 1)
        actions = batch["action"].flatten(0, 1)
        behaviour_log_probs = batch["sample_log_prob"].reshape(-1)
        vs, advantages = vs.reshape(-1), advantages.reshape(-1)
        n = observations.shape[0]
        mb = min(hp.minibatch_size, n)

        stats: dict[str, list[torch.Tensor]] = {
            k: [] for k in ("pg_loss", "value_loss", "entropy", "clip_frac")
        }
        for _ in range(hp.update_epochs):
            perm = torch.randperm(n, device=self.device)
            for start in range(0, n - mb + 1, mb):
                idx = perm[start : start + mb]
                params, value = self(observations.index_select(0, idx))
                dist = self.dist(params)
                ratio = (
                    dist.log_prob(actions.index_select(0, idx)) - behaviour_log_probs.index_select(0, idx)
                ).exp()
                adv = advantages.index_select(0, idx)
                if hp.normalize_advantage and mb > 1:
                    adv = normalized(adv)
                pg_loss = loss_clipped_surrogate(adv, ratio, hp.clip_coef)
                value_loss = 0.5 * loss_value(value.squeeze(-1), vs.index_select(0, idx))
                entropy = dist.entropy().mean()
                loss = pg_loss + hp.value_coef * value_loss - hp.entropy_coef * entropy

                self.gradient_step(opt, loss, hp.max_grad_norm)
                with torch.no_grad():
                    stats["pg_loss"].append(pg_loss.detach())
                    stats["value_loss"].append(value_loss.detach())
                    stats["entropy"].append(entropy.detach())
                    stats["clip_frac"].append(clip_fraction(ratio, hp.clip_coef))

        self.update_observation_statistics(batch)
        self.policy_version += 1
        metrics = {f"train/{k}": torch.stack(v).mean() for k, v in stats.items()}
        metrics["train/lr"] = lr
        self.log_rollout_stats(metrics)
