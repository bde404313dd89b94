"""GAE: by hand on tiny cases (termination vs truncation), and against TorchRL's estimator on random data."""

from __future__ import annotations

import pytest
import torch

from lightning_accelrl.algos.returns import gae


def col(*xs: float) -> torch.Tensor:
    """A [T, 1, 1] column."""
    return torch.tensor(xs, dtype=torch.float64).reshape(-1, 1, 1)


def flags(*xs: int) -> torch.Tensor:
    return torch.tensor(xs, dtype=torch.bool).reshape(-1, 1, 1)


def test_gae_by_hand_truncation_bootstraps() -> None:
    # step 1 is truncated: its next value is V(final obs) = 4.0, the trace is cut, bootstrapping is kept
    gamma, lmbda = 0.9, 0.5
    adv, ret = gae(
        reward=col(1, 2, 3),
        value=col(0.5, 1.0, 1.5),
        next_value=col(1.0, 4.0, 2.0),
        done=flags(0, 1, 0),
        terminated=flags(0, 0, 0),
        gamma=gamma,
        lmbda=lmbda,
    )
    d0, d1, d2 = 1 + 0.9 * 1.0 - 0.5, 2 + 0.9 * 4.0 - 1.0, 3 + 0.9 * 2.0 - 1.5
    expected = [d0 + gamma * lmbda * d1, d1, d2]
    torch.testing.assert_close(adv.flatten(), torch.tensor(expected, dtype=torch.float64))
    torch.testing.assert_close(
        ret.flatten(), torch.tensor(expected, dtype=torch.float64) + col(0.5, 1, 1.5).flatten()
    )


def test_gae_by_hand_termination_does_not_bootstrap() -> None:
    gamma, lmbda = 0.9, 0.5
    adv, _ = gae(
        reward=col(1, 2, 3),
        value=col(0.5, 1.0, 1.5),
        next_value=col(1.0, 4.0, 2.0),  # 4.0 must be ignored: the episode terminated
        done=flags(0, 1, 0),
        terminated=flags(0, 1, 0),
        gamma=gamma,
        lmbda=lmbda,
    )
    d0, d1, d2 = 1 + 0.9 * 1.0 - 0.5, 2 - 1.0, 3 + 0.9 * 2.0 - 1.5
    torch.testing.assert_close(adv.flatten(), torch.tensor([d0 + 0.45 * d1, d1, d2], dtype=torch.float64))


def test_gae_lambda_one_gamma_one_is_monte_carlo() -> None:
    # no episode end: advantage = sum of future rewards + V(s_T) - V(s_t)
    r = col(1, 2, 3, 4)
    v = col(0.1, 0.2, 0.3, 0.4)
    nv = col(0.2, 0.3, 0.4, 10.0)
    z = flags(0, 0, 0, 0)
    adv, ret = gae(r, v, nv, z, z, 1.0, 1.0)
    mc = torch.tensor([10.0, 9.0, 7.0, 4.0], dtype=torch.float64) + 10.0
    torch.testing.assert_close(ret.flatten(), mc)
    torch.testing.assert_close(adv.flatten(), mc - v.flatten())


def test_gae_lambda_zero_is_td_error() -> None:
    g = torch.Generator().manual_seed(1)
    T, B = 5, 3
    r, v, nv = (torch.randn(T, B, 1, generator=g) for _ in range(3))
    term = torch.rand(T, B, 1, generator=g) < 0.3
    done = term | (torch.rand(T, B, 1, generator=g) < 0.2)
    adv, _ = gae(r, v, nv, done, term, 0.97, 0.0)
    torch.testing.assert_close(adv, r + 0.97 * nv * (~term) - v)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("gamma,lmbda", [(0.99, 0.95), (0.9, 1.0), (1.0, 0.5)])
def test_gae_matches_torchrl(seed: int, gamma: float, lmbda: float) -> None:
    from torchrl.objectives.value.functional import generalized_advantage_estimate

    g = torch.Generator().manual_seed(seed)
    T, B = 17, 6
    reward = torch.randn(T, B, 1, generator=g)
    value = torch.randn(T, B, 1, generator=g)
    next_value = torch.randn(T, B, 1, generator=g)
    terminated = torch.rand(T, B, 1, generator=g) < 0.15
    truncated = torch.rand(T, B, 1, generator=g) < 0.1
    done = terminated | truncated
    assert (truncated & ~terminated).any() and terminated.any()

    adv, ret = gae(reward, value, next_value, done, terminated, gamma, lmbda)
    ref_adv, ref_ret = generalized_advantage_estimate(
        gamma, lmbda, value, next_value, reward, done, terminated, time_dim=0
    )
    torch.testing.assert_close(adv, ref_adv)
    torch.testing.assert_close(ret, ref_ret)
    # and time-major vs batch-major layouts agree in TorchRL, so time_dim=0 really is our layout
    bm_adv, _ = generalized_advantage_estimate(
        gamma,
        lmbda,
        value.transpose(0, 1),
        next_value.transpose(0, 1),
        reward.transpose(0, 1),
        done.transpose(0, 1),
        terminated.transpose(0, 1),
    )
    torch.testing.assert_close(bm_adv.transpose(0, 1), adv)


def test_gae_keeps_dtype_and_shape() -> None:
    T, B = 4, 2
    x = torch.ones(T, B, 1)
    z = torch.zeros(T, B, 1, dtype=torch.bool)
    adv, ret = gae(x, x, x, z, z, 0.99, 0.95)
    assert adv.shape == ret.shape == (T, B, 1)
    assert adv.dtype == torch.float32
