"""ResidualCNN3d: settings, initialisation schemes and layer choices."""

import math

import pytest
import torch
from torch import nn

from volreg.models import ResidualCNN3d
from volreg.models.dropout import PackedDropout
from volreg.models.layers import Projection

SMALL = {"volume_shape": (8, 8, 8), "widths": (4, 4, 8), "head_widths": (16, 8)}


def weighted_layers(net):
    return [layer for layer in net.modules() if isinstance(layer, (nn.Conv3d, nn.Linear))]


@pytest.mark.parametrize("num_targets", [1, 2])
def test_output_shape(num_targets):
    net = ResidualCNN3d(in_channels=2, num_targets=num_targets, **SMALL)

    assert net(torch.rand(3, 2, 8, 8, 8)).shape == (3, num_targets)


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ("dropout", "spatial"),
        ("residual", "tied"),
        ("init", "he"),
        ("bn_running_var", "sample"),
        ("dropout_masks", "philox"),
        ("conv_algorithm", "fft"),
    ],
)
def test_invalid_choice_lists_allowed_values(setting, value):
    with pytest.raises(ValueError, match=f"invalid {setting}='{value}': choose one of") as error:
        ResidualCNN3d(**SMALL, **{setting: value})

    assert "'" in str(error.value).split("choose one of")[1]


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("bn_momentum", 1.0, "Keras momentum 0.99 is PyTorch momentum 0.01"),
        ("bn_eps", 0.0, "must be positive"),
        ("dropout_rate", 1.0, "must lie in"),
        ("kernel_size", 4, "positive odd number"),
        ("volume_shape", (8, 8), "three positive sizes"),
        ("num_targets", 0, "at least 1"),
    ],
)
def test_invalid_number_is_rejected(setting, value, message):
    settings = {**SMALL, setting: value}

    with pytest.raises(ValueError, match=message):
        ResidualCNN3d(**settings)


def test_keras_convention_momentum_warns():
    with pytest.warns(UserWarning, match="set bn_momentum=0.01"):
        ResidualCNN3d(**SMALL, bn_momentum=0.99)


def test_shared_residual_needs_equal_widths():
    with pytest.raises(ValueError, match="widths\\[:-1\\] must be equal"):
        ResidualCNN3d(volume_shape=(8, 8, 8), widths=(4, 6, 8), residual="shared")


def test_keras_init_is_glorot_with_zero_biases():
    torch.manual_seed(0)
    net = ResidualCNN3d(**SMALL, init="keras")

    for layer in weighted_layers(net):
        fan_in = layer.weight[0].numel()
        fan_out = layer.weight.shape[0] * layer.weight[0, 0].numel()
        bound = math.sqrt(6.0 / (fan_in + fan_out))
        assert layer.weight.abs().max() <= bound
        assert torch.count_nonzero(layer.bias) == 0
        if layer.weight.numel() >= 10_000:
            std = layer.weight.std().item()
            assert abs(std - bound / math.sqrt(3.0)) < 0.05 * bound / math.sqrt(3.0)


def test_torch_init_is_bounded_by_fan_in():
    torch.manual_seed(0)
    net = ResidualCNN3d(**SMALL, init="torch")

    for layer in weighted_layers(net):
        bound = 1.0 / math.sqrt(layer.weight[0].numel())
        assert layer.weight.abs().max() <= bound
        assert layer.bias.abs().max() <= bound
        assert torch.count_nonzero(layer.bias) > 0


def test_port_init_keeps_only_output_bias():
    torch.manual_seed(0)
    net = ResidualCNN3d(**SMALL, init="port")

    for layer in weighted_layers(net):
        if layer is net.output_layer:
            assert torch.count_nonzero(layer.bias) == layer.bias.numel()
            assert layer.bias.abs().max() <= 1.0 / math.sqrt(layer.in_features)
        else:
            assert torch.count_nonzero(layer.bias) == 0


def test_keras_and_port_share_weight_bounds():
    net = ResidualCNN3d(**SMALL, init="port")
    first_conv = net.blocks[0].conv.weight

    # Glorot bound of a 1→4 channel 5³ conv: sqrt(6 / (125 + 500)).
    assert first_conv.abs().max() <= math.sqrt(6.0 / 625)


def block_output(dropout, masks="packed"):
    torch.manual_seed(0)
    net = ResidualCNN3d(**SMALL, dropout=dropout, dropout_rate=0.5, dropout_masks=masks)
    net.train()
    volume = torch.rand(4, 1, 8, 8, 8) + 1.0  # positive, so ReLU zeroes nothing
    block = net.blocks[0]
    features = block.norm(block.act(block.conv(volume)))
    return block.drop(features)  # (N, C, D, H, W)


def test_channel_dropout_zeroes_whole_channels():
    output = block_output("channel")
    zero_maps = (output == 0).flatten(2).all(dim=2)

    assert zero_maps.any()
    partly_zero = (output == 0).flatten(2).any(dim=2) & ~zero_maps
    assert not partly_zero.any()


@pytest.mark.parametrize("masks", ["packed", "bernoulli"])
def test_element_dropout_zeroes_single_values(masks):
    output = block_output("element", masks)
    zero_maps = (output == 0).flatten(2).all(dim=2)

    assert (output == 0).any()
    assert not zero_maps.any()


def test_head_dropout_stays_element_wise():
    net = ResidualCNN3d(**SMALL, dropout="channel")

    assert type(net.head_dropout) is PackedDropout
    assert type(net.blocks[0].drop) is nn.Dropout3d


def test_bernoulli_masks_use_nn_dropout():
    net = ResidualCNN3d(**SMALL, dropout_masks="bernoulli")

    assert type(net.head_dropout) is nn.Dropout
    assert type(net.blocks[0].drop) is nn.Dropout


def test_shared_residual_halves_projection_parameters():
    separate = ResidualCNN3d(**SMALL, residual="separate")
    shared = ResidualCNN3d(**SMALL, residual="shared")

    count = lambda net: sum(p.numel() for p in net.projections.parameters())  # noqa: E731
    assert count(shared) * 2 == count(separate)


def test_shared_residual_reuses_one_module():
    net = ResidualCNN3d(**SMALL, residual="shared")
    volume = torch.rand(2, 1, 8, 8, 8)
    net(volume).sum().backward()

    # Both residual adds send gradient into the single projection.
    assert len(net.projections) == 1
    assert net.projections[0].weight.grad is not None


def test_biased_running_variance():
    torch.manual_seed(0)
    biased = ResidualCNN3d(**SMALL, bn_running_var="biased", bn_momentum=0.5)
    unbiased = ResidualCNN3d(**SMALL, bn_running_var="unbiased", bn_momentum=0.5)
    unbiased.load_state_dict(biased.state_dict())
    volume = torch.rand(2, 1, 8, 8, 8)

    biased.train()(volume)
    unbiased.train()(volume)

    values = 2 * 8 * 8 * 8
    expected = 0.5 + (unbiased.blocks[0].norm.running_var - 0.5) * (values - 1) / values
    torch.testing.assert_close(biased.blocks[0].norm.running_var, expected)
    assert int(biased.blocks[0].norm.num_batches_tracked) == 1


@pytest.mark.parametrize("in_channels", [1, 3])
def test_projection_equals_conv3d(in_channels):
    torch.manual_seed(6)
    projection = Projection(in_channels, 4)
    conv = nn.Conv3d(in_channels, 4, kernel_size=1)
    conv.load_state_dict(projection.state_dict())
    volume = torch.rand(2, in_channels, 5, 5, 5)

    torch.testing.assert_close(projection(volume), conv(volume), atol=1e-6, rtol=0)
    projection(volume).square().sum().backward()
    conv(volume).square().sum().backward()
    torch.testing.assert_close(projection.weight.grad, conv.weight.grad)
    torch.testing.assert_close(projection.bias.grad, conv.bias.grad)
