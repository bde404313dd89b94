"""make_env: seeding per (seed, rank, env), vectorization choice, same-step autoreset, errors, TorchRL and
continuous-action envs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from foundation_helpers import COUNTING_ID, COUNTING_TL_ID, TIME_LIMIT, counting_length

from lightning_accelrl.envs import BatchedEnv, Step, env_seeds, make_env
from lightning_accelrl.envs.gym import GymVectorEnv, choose_vectorization
from lightning_accelrl.errors import ConfigError


def single_reset_obs(env_id: str, seed: int) -> np.ndarray:
    env = gym.make(env_id)
    try:
        return env.reset(seed=seed)[0]
    finally:
        env.close()


def test_env_seeds_formula() -> None:
    assert env_seeds(3, 1, 4) == [7, 8, 9, 10]
    assert env_seeds(0, 0, 2) == [0, 1]
    # no two (rank, env) pairs share a seed
    seeds = [s for rank in range(4) for s in env_seeds(5, rank, 8)]
    assert len(set(seeds)) == len(seeds)


def test_seeds_are_seed_plus_rank_times_num_envs_plus_index() -> None:
    with make_env("CartPole-v1", num_envs=4, seed=3, rank=1) as env:
        assert isinstance(env, BatchedEnv)
        assert env.num_envs == 4
        obs = env.reset()
    assert obs.shape == (4, 4) and obs.dtype == torch.float32
    for i, s in enumerate([7, 8, 9, 10]):
        np.testing.assert_array_equal(obs[i].numpy(), single_reset_obs("CartPole-v1", s))
    # and not the rank-0 seeds
    assert not np.array_equal(obs[0].numpy(), single_reset_obs("CartPole-v1", 3))


def test_reset_is_reproducible() -> None:
    with make_env("CartPole-v1", num_envs=3, seed=11) as a, make_env("CartPole-v1", num_envs=3, seed=11) as b:
        oa, ob = a.reset().clone(), b.reset().clone()
        torch.testing.assert_close(oa, ob, rtol=0, atol=0)
        actions = torch.tensor([0, 1, 1])
        for _ in range(20):
            sa, sb = a.step(actions), b.step(actions)
            torch.testing.assert_close(sa.next_observation, sb.next_observation, rtol=0, atol=0)


def test_vectorization_choice() -> None:
    with make_env("CartPole-v1", num_envs=2, vectorization="auto") as env:
        assert isinstance(env.env, gym.vector.SyncVectorEnv)
    with make_env("CartPole-v1", num_envs=2, vectorization="sync") as env:
        assert isinstance(env.env, gym.vector.SyncVectorEnv)
    # auto: subprocesses for envs that are not classic control, except with a single env
    assert choose_vectorization("CartPole-v1", 8, "auto") == "sync"
    assert choose_vectorization(COUNTING_ID, 8, "auto") == "async"
    assert choose_vectorization(COUNTING_ID, 1, "auto") == "sync"
    assert choose_vectorization("CartPole-v1", 8, "async") == "async"


def test_async_vectorization_matches_sync() -> None:
    with (
        make_env("CartPole-v1", num_envs=2, seed=5, vectorization="async") as a,
        make_env("CartPole-v1", num_envs=2, seed=5, vectorization="sync") as s,
    ):
        assert isinstance(a.env, gym.vector.AsyncVectorEnv)
        torch.testing.assert_close(a.reset(), s.reset().clone(), rtol=0, atol=0)
        actions = torch.tensor([1, 0])
        for _ in range(30):  # long enough for some episodes to end
            sa, ss = a.step(actions), s.step(actions)
            torch.testing.assert_close(sa.next_observation, ss.next_observation, rtol=0, atol=0)
            torch.testing.assert_close(sa.observation, ss.observation, rtol=0, atol=0)
            assert torch.equal(sa.terminated, ss.terminated)


def test_same_step_autoreset_counting_env() -> None:
    num_envs = 4
    lengths = [counting_length(s) for s in env_seeds(0, 0, num_envs)]  # 2, 3, 4, 5
    with make_env(COUNTING_ID, num_envs=num_envs, seed=0, vectorization="sync") as env:
        obs = env.reset().clone()
        np.testing.assert_array_equal(obs[:, 0].numpy(), 0)
        np.testing.assert_array_equal(obs[:, 1].numpy(), lengths)
        ends = 0
        for step_idx in range(1, 31):
            step = env.step(torch.zeros(num_envs, dtype=torch.int64))
            assert isinstance(step, Step)
            nxt, cur = step.next_observation.clone(), step.observation.clone()
            # no transition crosses an episode boundary
            np.testing.assert_array_equal(nxt[:, 0].numpy(), obs[:, 0].numpy() + 1)
            np.testing.assert_array_equal(nxt[:, 1].numpy(), lengths)
            torch.testing.assert_close(step.reward, nxt[:, 0])
            assert step.reward.dtype == torch.float32
            for i, length in enumerate(lengths):
                done_expected = step_idx % length == 0
                assert bool(step.terminated[i]) == done_expected
                assert not bool(step.truncated[i])
                if done_expected:
                    ends += 1
                    assert nxt[i, 0] == length  # true final observation
                    assert cur[i, 0] == 0  # reset observation to act on next
                else:
                    assert torch.equal(cur[i], nxt[i])
            obs = cur
        assert ends == sum(30 // length for length in lengths)


def test_time_limit_truncation_is_reported() -> None:
    # lengths 2,3,4,5 with a time limit of 4: env 2 terminates and is truncated at t=4, env 3 only truncated
    with make_env(COUNTING_TL_ID, num_envs=4, seed=0, vectorization="sync") as env:
        env.reset()
        steps = [env.step(torch.zeros(4, dtype=torch.int64)) for _ in range(TIME_LIMIT)]
        last = steps[-1]
        assert last.truncated.tolist() == [False, False, True, True]
        assert last.terminated.tolist() == [True, False, True, False]
        assert last.next_observation[3, 0] == TIME_LIMIT  # final observation of the truncated episode
        assert last.observation[3, 0] == 0


def test_user_vector_env_in_next_step_mode_is_refused() -> None:
    venv = gym.make_vec("CartPole-v1", num_envs=2, vectorization_mode="sync")  # gymnasium default: NEXT_STEP
    try:
        with pytest.raises(ConfigError, match="autoreset"):
            make_env(venv)
    finally:
        venv.close()


def test_user_vector_env_in_same_step_mode_is_accepted() -> None:
    venv = gym.make_vec(
        "CartPole-v1",
        num_envs=3,
        vectorization_mode="sync",
        vector_kwargs={"autoreset_mode": gym.vector.AutoresetMode.SAME_STEP},
    )
    with make_env(venv, seed=2, rank=1) as env:
        assert isinstance(env, GymVectorEnv) and env.num_envs == 3
        obs = env.reset()
        for i, s in enumerate(env_seeds(2, 1, 3)):
            np.testing.assert_array_equal(obs[i].numpy(), single_reset_obs("CartPole-v1", s))


@pytest.mark.parametrize("bad", ["CartPole-v2", "Cartpole-v1"])
def test_unknown_env_id_has_close_match_hint(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"Did you mean .*CartPole-v1") as info:
        make_env(bad, num_envs=1)
    assert bad in str(info.value)
    assert "\n" not in str(info.value)  # one line for the CLI


def test_unknown_env_id_without_match() -> None:
    with pytest.raises(ConfigError, match="unknown env id") as info:
        make_env("zzzzqqqq-v9", num_envs=1)
    assert "Did you mean" not in str(info.value)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="num_envs"):
        make_env("CartPole-v1", num_envs=0)
    with pytest.raises(ConfigError, match="env must be a Gymnasium id, an env factory"):
        make_env(object())


def test_torchrl_serial_env() -> None:
    from torchrl.envs import GymEnv, SerialEnv

    tenv = SerialEnv(2, lambda: GymEnv("CartPole-v1", categorical_action_encoding=True))
    with make_env(tenv, seed=4, rank=1) as env:
        assert env.num_envs == 2
        assert env.spec.discrete and env.spec.num_actions == 2
        assert env.spec.observation_shape == (4,)
        obs = env.reset()
        assert obs.shape == (2, 4)
        # the first sub-env is seeded with seed + rank * num_envs (TorchRL's set_seed resets it, then we reset
        # again); TorchRL derives the other sub-envs' seeds from it (its seed_generator)
        ref = gym.make("CartPole-v1")
        ref.reset(seed=4 + 1 * 2)
        np.testing.assert_allclose(obs[0].numpy(), ref.reset()[0])
        ref.close()
        assert not torch.equal(obs[0], obs[1])
        first_obs = obs.clone()
        ends = 0
        for _ in range(40):
            prev = env._td["observation"].clone()
            step = env.step(torch.ones(2, dtype=torch.int64))  # always push right: episodes end fast
            assert step.next_observation.shape == (2, 4)
            assert step.observation.shape == (2, 4)
            assert step.reward.shape == (2,) and step.reward.dtype == torch.float32
            assert step.terminated.shape == (2,) and step.terminated.dtype == torch.bool
            assert step.truncated.shape == (2,) and step.truncated.dtype == torch.bool
            done = step.terminated | step.truncated
            ends += int(done.sum())
            # same-step: where done, the observation to act on is a fresh reset, not the final one
            for i in range(2):
                if done[i]:
                    assert not torch.equal(step.observation[i], step.next_observation[i])
                    assert step.observation[i].abs().max() <= 0.05  # CartPole resets within +-0.05
                else:
                    assert torch.equal(step.observation[i], step.next_observation[i])
                assert not torch.equal(prev[i], step.next_observation[i])
        assert ends >= 2
    # reproducible, and another rank gets other episodes
    for rank, same in ((1, True), (0, False)):
        tenv = SerialEnv(2, lambda: GymEnv("CartPole-v1", categorical_action_encoding=True))
        with make_env(tenv, seed=4, rank=rank) as env:
            assert torch.equal(env.reset(), first_obs) == same


def test_torchrl_default_one_hot_actions_match_categorical() -> None:
    """TorchRL's default one-hot action spec: the adapter takes indices and hands the env one-hot actions."""
    from torchrl.envs import GymEnv, SerialEnv

    runs = []
    for categorical in (False, True):
        tenv = SerialEnv(2, lambda c=categorical: GymEnv("CartPole-v1", categorical_action_encoding=c))
        with make_env(tenv, seed=3) as env:
            assert env.spec.discrete and env.spec.num_actions == 2 and env.spec.action_shape == ()
            obs = [env.reset().clone()]
            for t in range(30):
                obs.append(env.step(torch.tensor([t % 2, 1])).next_observation.clone())
        runs.append(torch.stack(obs))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)


def test_torchrl_unbatched_env_is_one_env() -> None:
    from torchrl.envs import GymEnv

    with make_env(GymEnv("CartPole-v1"), seed=5) as env:
        assert env.num_envs == 1 and env.spec.observation_shape == (4,)
        obs = env.reset()
        assert obs.shape == (1, 4)
        step = env.step(torch.tensor([1]))
        assert step.next_observation.shape == (1, 4) and step.reward.shape == (1,)
    ref = gym.make("CartPole-v1")  # TorchRL's set_seed resets the env, then we reset it again
    ref.reset(seed=5)
    np.testing.assert_allclose(obs[0].numpy(), ref.reset()[0])
    ref.close()


def test_continuous_actions_spec_and_clipping() -> None:
    with make_env("Pendulum-v1", num_envs=2, seed=1) as env:
        spec = env.spec
        assert not spec.discrete
        assert spec.action_dim == 1 and spec.action_shape == (1,)
        assert spec.action_low == (-2.0,) and spec.action_high == (2.0,)
        assert spec.action_dtype == torch.float32
        assert spec.observation_shape == (3,) and spec.observation_dtype == torch.float32
        env.reset()
        step = env.step(torch.tensor([[100.0], [-100.0]]))  # far outside [-2, 2]
    refs = []
    for s, a in zip(env_seeds(1, 0, 2), (2.0, -2.0)):
        single = gym.make("Pendulum-v1")
        single.reset(seed=s)
        obs, reward, *_ = single.step(np.array([a], dtype=np.float32))
        single.close()
        refs.append((obs, reward))
    for i, (obs, reward) in enumerate(refs):
        np.testing.assert_allclose(step.next_observation[i].numpy(), obs, rtol=1e-6)
        np.testing.assert_allclose(float(step.reward[i]), reward, rtol=1e-6)


def test_env_spec_round_trip() -> None:
    from lightning_accelrl.envs import EnvSpec

    with make_env("Pendulum-v1", num_envs=1) as env:
        spec = env.spec
    assert EnvSpec.from_dict(spec.to_dict()) == spec
    with make_env("CartPole-v1", num_envs=1) as env:
        spec = env.spec
    d = spec.to_dict()
    assert d["observation_dtype"] == "float32" and d["num_actions"] == 2
    assert EnvSpec.from_dict(d) == spec


def test_env_spec_round_trip_of_new_fields_and_older_dicts(tmp_path) -> None:
    """Dict parts, MultiDiscrete, layout and frame stack survive to_dict/from_dict and a weights_only load; dicts
    written before these fields existed still load (as CHW, no parts, no nvec)."""
    from lightning_accelrl.envs import EnvSpec, ObservationPart

    spec = EnvSpec(
        (77,),
        torch.float32,
        discrete=True,
        num_actions=5,
        action_nvec=(3, 2),
        observation_parts=(
            ObservationPart("cue", (3,), torch.float32),
            ObservationPart("grid", (6, 6, 2), torch.uint8, "HWC"),
        ),
    )
    torch.save({"spec": spec.to_dict()}, tmp_path / "spec.pt")
    loaded = torch.load(tmp_path / "spec.pt", weights_only=True)["spec"]
    assert EnvSpec.from_dict(loaded) == spec
    old = {
        "observation_shape": [4, 84, 84],
        "observation_dtype": "uint8",
        "discrete": True,
        "num_actions": 6,
        "action_dim": 0,
        "action_low": [],
        "action_high": [],
    }
    atari = EnvSpec.from_dict(old)
    assert atari.layout == "CHW" and atari.is_image and not atari.action_nvec and atari.action_shape == ()
    with pytest.raises(ValueError, match="not a torch dtype"):
        EnvSpec.from_dict({**old, "observation_dtype": "Tensor"})


def test_image_layout_rule() -> None:
    from lightning_accelrl.envs.base import image_layout

    assert image_layout((4, 84, 84)) == "CHW" and image_layout((3, 64, 64)) == "CHW"
    assert image_layout((10, 10, 4)) == "HWC" and image_layout((84, 84, 3)) == "HWC"
    assert image_layout((10, 10, 10)) == "HWC"  # ties: Gymnasium's image convention
    assert image_layout((4,)) == ""


def test_env_factories_pickle_into_sampler_processes() -> None:
    """The samplers receive functools.partial(make_env, env, ...) and call it with a stream: it must pickle."""
    import functools
    import pickle

    from user_envs import make_cartpole

    factory = functools.partial(make_env, make_cartpole, 2, 7, vectorization="auto", env_kwargs={})
    with pickle.loads(pickle.dumps(factory))(3) as env:  # stream 3: seeds 7 + 3 * 2 + i
        obs = env.reset()
    np.testing.assert_array_equal(obs[1].numpy(), single_reset_obs("CartPole-v1", 14))


def test_env_factory_in_env_processes_matches_in_process() -> None:
    """``vectorization="async"``: the factory runs in one process per env (Gymnasium's AsyncVectorEnv)."""
    from user_envs import make_cartpole

    runs = []
    for mode in ("sync", "async"):
        with make_env(make_cartpole, num_envs=2, seed=5, vectorization=mode) as env:
            assert isinstance(env.env, gym.vector.AsyncVectorEnv) == (mode == "async")
            obs = [env.reset().clone()]
            for _ in range(20):
                obs.append(env.step(torch.tensor([1, 0])).next_observation.clone())
        runs.append(torch.stack(obs))
    torch.testing.assert_close(runs[0], runs[1], rtol=0, atol=0)
