"""The DFT-based convolution against torch's conv3d, and the choice between the two."""

import pytest
import torch
import torch.nn.functional as F

from volreg.models import ResidualCNN3d
from volreg.models.fourier_conv import (
    AutoConv3d,
    FourierConv3d,
    fourier_conv3d,
    fourier_is_faster,
)

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
        (1, 2, 2, (6, 5, 4), 7),
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


def test_auto_picks_by_dtype_and_autocast():
    conv = AutoConv3d(16, 16, 5)
    volumes = torch.rand(16, 16, 8, 8, 8)

    assert conv.uses_fourier(volumes)
    assert conv.uses_fourier(volumes.double())
    assert not conv.uses_fourier(volumes.bfloat16())
    assert not conv.uses_fourier(volumes[0])  # unbatched
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not conv.uses_fourier(volumes)


def test_auto_runs_what_it_picks():
    # Bit for bit the one or the other computation.
    fourier = AutoConv3d(16, 16, 5)
    direct = AutoConv3d(1, 16, 5)
    volumes = torch.rand(16, 16, 8, 8, 8)

    assert torch.equal(fourier(volumes), fourier_conv3d(volumes, fourier.weight, fourier.bias))
    assert torch.equal(
        direct(volumes[:, :1]),
        F.conv3d(volumes[:, :1], direct.weight, direct.bias, padding=2),
    )


# (batch, in, out, edge, kernel, Fourier faster): forward and backward passes timed on a 2-core
# Xeon, with the speed-up of the Fourier path in the comment.
TIMED_CASES = [
    (16, 16, 32, 16, 5, True),  # 1.6-2.3x, the network's last block at width 16
    (16, 64, 128, 16, 5, True),  # 4.0x, the Keras script's last block
    (16, 8, 8, 16, 5, True),  # 4.9x
    (8, 16, 32, 32, 5, True),  # 2.7x
    (16, 16, 16, 12, 7, True),  # 4.0x
    (16, 1, 16, 16, 5, False),  # the network's first block
    (1, 64, 128, 16, 5, False),  # 0.58x
    (2, 64, 128, 32, 5, False),  # 0.73x
    (16, 16, 16, 24, 3, False),  # 0.53x
    (16, 32, 32, 16, 3, False),  # 0.85x
    (4, 8, 8, 64, 3, False),  # 0.63x
]


@pytest.mark.parametrize(
    ("batch", "channels", "out_channels", "edge", "kernel", "faster"), TIMED_CASES
)
def test_estimate_agrees_with_timings(batch, channels, out_channels, edge, kernel, faster):
    assert fourier_is_faster(batch, channels, out_channels, (edge,) * 3, kernel) is faster


def test_unbatched_volume():
    conv = FourierConv3d(3, 2, 3)
    volume = torch.rand(3, 5, 6, 7)

    torch.testing.assert_close(conv(volume), F.conv3d(volume, conv.weight, conv.bias, padding=1))


def test_rejects_channel_count_mismatch():
    with pytest.raises(ValueError, match=r"shape \[2, 3, 6, 6, 6\].*expected \(N, 4, D, H, W\)"):
        fourier_conv3d(torch.rand(2, 3, 6, 6, 6), torch.rand(5, 4, 3, 3, 3))


def test_rejects_dtype_mismatch():
    with pytest.raises(ValueError, match="volumes are torch.float32 but kernels torch.float64"):
        fourier_conv3d(torch.rand(1, 1, 6, 6, 6), torch.rand(1, 1, 3, 3, 3, dtype=torch.float64))


def test_channels_last_input():
    conv = FourierConv3d(4, 2, 3)
    volumes = torch.rand(2, 4, 6, 7, 5).contiguous(memory_format=torch.channels_last_3d)
    expected = F.conv3d(volumes, conv.weight, conv.bias, padding=1)

    torch.testing.assert_close(conv(volumes), expected)


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


def test_traces_without_graph_breaks():
    # A break inside the network's loop over blocks makes torch.compile give up the forward.
    conv = FourierConv3d(2, 3, 3)
    explanation = torch._dynamo.explain(conv)(torch.rand(4, 2, 6, 6, 6))

    assert explanation.graph_break_count == 0
