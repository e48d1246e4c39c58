"""The DFT-based convolution against torch's conv3d, and the choice between the two."""

import pytest
import torch
import torch.nn.functional as F

from volreg.models import ResidualCNN3d
from volreg.models.fourier_conv import AutoConv3d, FourierConv3d, fourier_conv3d

SMALL = {"volume_shape": (8, 8, 8), "widths": (4, 4, 8), "head_widths": (16, 8)}


def gradients(conv, volumes, kernels, bias, grad_out):
    inputs = [t for t in (volumes, kernels, bias) if t.requires_grad]
    out = conv(volumes, kernels, bias)
    return (out, *torch.autograd.grad(out, inputs, grad_out))


@pytest.mark.parametrize(
    ("batch", "channels", "out_channels", "size", "kernel_size"),
    [
        (2, 3, 4, (8, 8, 8), 5),
        (1, 2, 3, (7, 9, 6), 3),  # odd, even and unequal edges
        (2, 1, 4, (6, 6, 6), 5),  # the network's first layer: one input channel
        (1, 2, 2, (3, 4, 5), 5),  # kernel larger than an edge
        (2, 2, 3, (5, 5, 5), 1),
    ],
)
def test_matches_conv3d_in_float64(batch, channels, out_channels, size, kernel_size):
    # In float64 the rounding of either method is far below the tolerance, so a wrong
    # transform, padding or adjoint would show.
    generator = torch.Generator().manual_seed(0)
    options = {"dtype": torch.float64, "generator": generator}
    volumes = torch.randn(batch, channels, *size, **options).requires_grad_()
    kernels = torch.randn(out_channels, channels, *(kernel_size,) * 3, **options)
    kernels.requires_grad_()
    bias = torch.randn(out_channels, **options).requires_grad_()
    grad_out = torch.randn(batch, out_channels, *size, **options)

    expected = gradients(
        lambda x, w, b: F.conv3d(x, w, b, padding="same"), volumes, kernels, bias, grad_out
    )
    actual = gradients(fourier_conv3d, volumes, kernels, bias, grad_out)

    for name, a, e in zip(["output", "volumes", "kernels", "bias"], actual, expected, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-10, msg=lambda m, n=name: f"{n}: {m}")


def test_float32_error_is_float32_rounding():
    generator = torch.Generator().manual_seed(1)
    volumes = torch.randn(4, 16, 16, 16, 16, generator=generator, requires_grad=True)
    kernels = (0.05 * torch.randn(32, 16, 5, 5, 5, generator=generator)).requires_grad_()
    grad_out = torch.randn(4, 32, 16, 16, 16, generator=generator)
    bias = torch.zeros(32)

    expected = gradients(
        lambda x, w, b: F.conv3d(x, w, b, padding=2), volumes, kernels, bias, grad_out
    )
    actual = gradients(fourier_conv3d, volumes, kernels, bias, grad_out)

    for a, e in zip(actual, expected, strict=True):
        assert (a - e).abs().max() <= 1e-5 * e.abs().max()


def test_without_bias_and_without_volume_gradient():
    volumes = torch.rand(2, 1, 6, 6, 6)
    kernels = torch.randn(3, 1, 3, 3, 3, requires_grad=True)

    out = fourier_conv3d(volumes, kernels)
    (grad,) = torch.autograd.grad(out.square().sum(), [kernels])

    reference = F.conv3d(volumes, kernels, padding=1)
    (expected,) = torch.autograd.grad(reference.square().sum(), [kernels])
    torch.testing.assert_close(out, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kernel_shape", [(4, 4, 4), (3, 3, 5)])
def test_rejects_even_or_non_cubic_kernels(kernel_shape):
    message = r"invalid kernel shape \[.*odd cubic kernels; use conv_algorithm=direct"
    with pytest.raises(ValueError, match=message):
        fourier_conv3d(torch.rand(1, 1, 6, 6, 6), torch.rand(1, 1, *kernel_shape))


def test_under_autocast_computes_in_float32():
    volumes = torch.rand(2, 3, 6, 6, 6)
    conv = FourierConv3d(3, 4, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(volumes)

    assert out.dtype == torch.float32
    torch.testing.assert_close(out, F.conv3d(volumes, conv.weight, conv.bias, padding=1))


def test_auto_picks_fourier_for_float32_multichannel():
    multichannel = AutoConv3d(3, 4, 5)
    one_channel = AutoConv3d(1, 4, 5)
    volumes = torch.rand(2, 3, 8, 8, 8)

    assert multichannel.uses_fourier(volumes)
    assert not multichannel.uses_fourier(volumes.double())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not multichannel.uses_fourier(volumes)
    assert not one_channel.uses_fourier(volumes[:, :1])
    # The choice is what runs: bit for bit the one or the other computation.
    assert torch.equal(
        multichannel(volumes),
        fourier_conv3d(volumes, multichannel.weight, multichannel.bias),
    )
    assert torch.equal(
        one_channel(volumes[:, :1]),
        F.conv3d(volumes[:, :1], one_channel.weight, one_channel.bias, padding=2),
    )


def test_weights_move_between_algorithms():
    torch.manual_seed(0)
    direct = ResidualCNN3d(**SMALL, conv_algorithm="direct").eval()
    fourier = ResidualCNN3d(**SMALL, conv_algorithm="fourier").eval()
    fourier.load_state_dict(direct.state_dict())
    volumes = torch.rand(3, 1, 8, 8, 8)

    assert isinstance(fourier.blocks[1].conv, FourierConv3d)
    with torch.no_grad():
        torch.testing.assert_close(fourier(volumes), direct(volumes), rtol=1e-5, atol=1e-5)


def test_training_step_gradients_match_direct():
    torch.manual_seed(0)
    direct = ResidualCNN3d(**SMALL, dropout_rate=0.0, conv_algorithm="direct")
    auto = ResidualCNN3d(**SMALL, dropout_rate=0.0, conv_algorithm="auto")
    auto.load_state_dict(direct.state_dict())
    volumes = torch.rand(4, 1, 8, 8, 8)

    for net in (direct, auto):
        net(volumes).sum().backward()
    for (name, p), q in zip(direct.named_parameters(), auto.parameters(), strict=True):
        torch.testing.assert_close(
            q.grad, p.grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}"
        )
