"""CNN encoders, the CNN actor-critic, Q-networks (dueling, distributional) and the network factory."""

from __future__ import annotations

import pytest
import torch

from lightning_accelrl.envs.base import EnvSpec
from lightning_accelrl.errors import ConfigError
from lightning_accelrl.nets.cnn import ActorCriticCNN, ImpalaCNN, NatureCNN, SmallCNN, build_encoder
from lightning_accelrl.nets.factory import NETWORKS, build_actor_critic, choose_network
from lightning_accelrl.nets.q import QNetwork

ATARI = EnvSpec((4, 84, 84), torch.uint8, discrete=True, num_actions=6)
VECTOR = EnvSpec((4,), torch.float32, discrete=True, num_actions=2)


def frames(*batch: int) -> torch.Tensor:
    return torch.randint(
        0, 256, (*batch, 4, 84, 84), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )


@pytest.mark.parametrize(("encoder", "width"), [("nature", 512), ("impala", 256)])
def test_actor_critic_cnn_shapes_and_uint8_normalisation(encoder: str, width: int) -> None:
    torch.manual_seed(0)
    net = ActorCriticCNN(ATARI, encoder)
    assert net.encoder.out_dim == width and net.spec == ATARI
    obs = frames(3, 2)
    logits, value = net(obs)
    assert logits.shape == (3, 2, 6) and value.shape == (3, 2, 1) and logits.dtype == torch.float32
    assert torch.allclose(net.value(obs), value)
    # uint8 frames are scaled in the network: the same as feeding floats in [0, 1]
    assert torch.allclose(net(obs.float() / 255)[1], value, atol=1e-5)


def test_cleanrl_init() -> None:
    torch.manual_seed(0)
    net = ActorCriticCNN(ATARI, "nature")
    w = net.policy_head.weight  # orthogonal rows, gain 0.01
    assert torch.allclose(w @ w.T, 0.01**2 * torch.eye(6), atol=1e-7)
    assert torch.allclose(net.value_head.weight.norm(), torch.tensor(1.0), atol=1e-5)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d | torch.nn.Linear):
            assert m.bias.abs().max() == 0
    conv1 = net.encoder.convs[0].weight.flatten(1)  # orthogonal, gain sqrt(2)
    assert torch.allclose(conv1 @ conv1.T, 2.0 * torch.eye(32), atol=1e-4)


def test_continuous_actions_have_log_std() -> None:
    spec = EnvSpec(
        (3, 84, 84), torch.uint8, discrete=False, action_dim=2, action_low=(-1, -1), action_high=(1, 1)
    )
    net = ActorCriticCNN(spec, "nature")
    params, value = net(torch.zeros(5, 3, 84, 84, dtype=torch.uint8))
    # the policy parameters are the mean and the log-std side by side
    assert params.shape == (5, 4) and value.shape == (5, 1) and net.log_std.shape == (2,)
    with torch.no_grad():
        net.log_std.fill_(-0.5)
    assert torch.equal(net(torch.zeros(5, 3, 84, 84, dtype=torch.uint8))[0][:, 2:], torch.full((5, 2), -0.5))


def test_channels_last_and_compile_flags_keep_outputs_and_state_dict() -> None:
    torch.manual_seed(0)
    plain = ActorCriticCNN(ATARI, "nature")
    fast = ActorCriticCNN(
        ATARI, "nature", channels_last=True, compile=True
    )  # compile is lazy: not called here
    assert plain.state_dict().keys() == fast.state_dict().keys()
    cl = ActorCriticCNN(ATARI, "nature", channels_last=True)
    cl.load_state_dict(plain.state_dict())
    obs = frames(4)
    assert torch.allclose(cl(obs)[0], plain(obs)[0], atol=1e-5)


def test_encoders_accept_other_shapes() -> None:
    assert NatureCNN((2, 64, 64))(torch.zeros(1, 2, 64, 64)).shape == (1, 512)
    assert ImpalaCNN((1, 84, 84))(torch.zeros(1, 1, 84, 84)).shape == (1, 256)


@pytest.mark.parametrize("encoder", ["mlp", "nature", "impala"])
@pytest.mark.parametrize("num_atoms", [1, 51])
def test_q_network_shapes(encoder: str, num_atoms: int) -> None:
    spec, obs = (VECTOR, torch.randn(3, 5, 4)) if encoder == "mlp" else (ATARI, frames(3, 5))
    q = QNetwork(spec, encoder, dueling=encoder != "impala", num_atoms=num_atoms)
    out = q(obs)
    assert out.shape == ((3, 5, q.num_actions) if num_atoms == 1 else (3, 5, q.num_actions, num_atoms))
    assert out.dtype == torch.float32


@pytest.mark.parametrize("num_atoms", [1, 11])
def test_dueling_identity_mean_advantage_is_zero(num_atoms: int) -> None:
    torch.manual_seed(0)
    q = QNetwork(VECTOR, "mlp", (32,), dueling=True, num_atoms=num_atoms)
    obs = torch.randn(7, 4)
    out = q(obs)
    x = q.features(obs)
    value = q.value_stream(x)  # [7, atoms]
    adv = q.advantage(x).reshape(7, 2, num_atoms)
    q_atoms = out if num_atoms > 1 else out.unsqueeze(-1)
    # Q = V + A - mean_a A: the mean over actions of Q is V (per atom), and Q - V has zero mean over actions
    assert torch.allclose(q_atoms.mean(1), value, atol=1e-6)
    assert torch.allclose((q_atoms - value.unsqueeze(1)).mean(1), torch.zeros(7, num_atoms), atol=1e-6)
    assert torch.allclose(q_atoms - q_atoms.mean(1, keepdim=True), adv - adv.mean(1, keepdim=True), atol=1e-6)


def test_q_network_auto_and_positional_call() -> None:
    # the DQN module's call: QNetwork(spec, network, hidden, activation, dueling=...)
    assert isinstance(QNetwork(ATARI, "auto", (256,), "relu", dueling=True).encoder, NatureCNN)
    assert QNetwork(VECTOR, "auto", (16, 16), "tanh")(torch.zeros(2, 4)).shape == (2, 2)
    with pytest.raises(ConfigError, match="Discrete action space.*PPO"):
        QNetwork(EnvSpec((3,), torch.float32, discrete=False, action_dim=1))
    with pytest.raises(ConfigError, match="MultiDiscrete"):
        QNetwork(EnvSpec((3,), torch.float32, discrete=True, num_actions=5, action_nvec=(2, 3)))


def test_factory() -> None:
    assert NETWORKS == ("auto", "mlp", "nature_cnn", "impala_cnn", "small_cnn")
    assert isinstance(build_actor_critic(ATARI, "auto"), ActorCriticCNN)
    assert isinstance(build_actor_critic(ATARI, "impala_cnn").encoder, ImpalaCNN)
    assert not isinstance(build_actor_critic(VECTOR, "auto"), ActorCriticCNN)
    with pytest.raises(ConfigError, match="image observations"):
        build_actor_critic(VECTOR, "nature_cnn")
    with pytest.raises(ConfigError, match="unknown network"):
        build_actor_critic(ATARI, "resnet")


MINATAR = EnvSpec((10, 10, 4), torch.bool, discrete=True, num_actions=3, image_layout="HWC")


def test_auto_chooses_by_observation() -> None:
    assert choose_network(VECTOR) == "mlp"
    assert choose_network(ATARI) == "nature_cnn"  # 84 px frames
    assert choose_network(MINATAR) == "small_cnn"  # 10x10 grid, channels last
    assert choose_network(EnvSpec((36, 36, 3), torch.uint8, True, 2, image_layout="HWC")) == "nature_cnn"
    assert choose_network(EnvSpec((3, 35, 64), torch.uint8, True, 2, image_layout="CHW")) == "small_cnn"
    net = build_actor_critic(MINATAR, "auto")
    assert isinstance(net.encoder, SmallCNN)
    assert isinstance(QNetwork(MINATAR, "auto").encoder, SmallCNN)


@pytest.mark.parametrize("encoder", ["small", "nature", "impala"])
def test_channels_last_observations_are_permuted_in_the_network(encoder: str) -> None:
    """An HWC encoder on [N, H, W, C] equals the CHW encoder with the same weights on [N, C, H, W]."""
    size = 10 if encoder == "small" else 40
    torch.manual_seed(0)
    hwc = build_encoder(encoder, (size, size, 4), layout="HWC")
    chw_enc = build_encoder(encoder, (4, size, size), layout="CHW")
    chw_enc.load_state_dict(hwc.state_dict())
    obs = torch.rand(3, size, size, 4) > 0.5  # bool grid, MinAtar-style
    torch.testing.assert_close(hwc(obs), chw_enc(obs.permute(0, 3, 1, 2)))
    assert hwc(obs).shape == (3, hwc.out_dim)


def test_small_images_fail_clearly_with_the_nature_cnn() -> None:
    with pytest.raises(ConfigError, match="needs image observations"):
        build_actor_critic(VECTOR, "small_cnn")
    with pytest.raises(ValueError, match="3-D image"):
        build_encoder("small", (10, 10))


def test_encoder_normalises_uint8_bool_and_float_alike() -> None:
    torch.manual_seed(0)
    enc = SmallCNN((2, 5, 5))
    bits = torch.rand(4, 2, 5, 5) > 0.5
    torch.testing.assert_close(enc(bits), enc(bits.float()))
    torch.testing.assert_close(enc(bits.to(torch.uint8) * 255), enc(bits.float()))
