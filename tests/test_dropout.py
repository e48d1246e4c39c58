"""PackedDropout: Keras Dropout's distribution from packed random bits on the CPU."""

import pytest
import torch
from torch import nn

from volreg.models.dropout import PackedDropout, keep_mask, lane_bits

# 2**22 values: the kept fraction has a standard deviation near 2e-4, so 1e-3 is about 5 sigma.
MANY = (16, 16, 16, 16, 64)


def test_keep_mask_keeps_one_minus_rate():
    torch.manual_seed(0)
    keep = keep_mask(torch.empty(MANY), 0.25)

    assert keep.dtype == torch.bool
    assert keep.shape == MANY
    assert keep.float().mean().item() == pytest.approx(0.75, abs=1e-3)


@pytest.mark.parametrize(("rate", "lanes"), [(0.5, 8), (0.3, 4)])
def test_keep_mask_lanes_are_independent_of_position(rate, lanes):
    # Each 64-bit word gives 8 (7-bit lanes) or 4 (15-bit lanes) neighbouring values, and
    # every lane must keep 1 - rate.
    torch.manual_seed(1)
    keep = keep_mask(torch.empty(MANY), rate).reshape(-1, lanes).float()

    for fraction in keep.mean(dim=0).tolist():
        assert fraction == pytest.approx(1.0 - rate, abs=3e-3)
    # Neighbours in a word are uncorrelated.
    both = (keep[:, 0] * keep[:, lanes - 1]).mean().item()
    assert both == pytest.approx((1.0 - rate) ** 2, abs=3e-3)


@pytest.mark.parametrize(("rate", "bits"), [(0.25, 7), (0.5, 7), (0.1, 15), (0.3, 15)])
def test_lane_bits_exact_rates_use_7_bits(rate, bits):
    assert lane_bits(rate) == bits


def test_keep_mask_inexact_rate_close():
    torch.manual_seed(7)
    keep = keep_mask(torch.empty(MANY), 0.1)

    assert keep.float().mean().item() == pytest.approx(0.9, abs=1e-3)


def test_keep_mask_follows_channels_last_layout():
    like = torch.empty(2, 3, 4, 4, 4).to(memory_format=torch.channels_last_3d)

    keep = keep_mask(like, 0.25)

    assert keep.stride() == like.stride()


@pytest.mark.parametrize("rate", [0.1, 0.25, 0.5])
def test_training_output_is_zero_or_scaled_input(rate):
    torch.manual_seed(2)
    layer = PackedDropout(rate).train()
    values = torch.rand(8, 4, 8, 8, 8) + 1.0

    output = layer(values)

    nonzero = output != 0
    torch.testing.assert_close(output[nonzero], values[nonzero] / (1.0 - rate))
    assert nonzero.float().mean().item() == pytest.approx(1.0 - rate, abs=0.01)


def test_gradient_is_the_mask_times_the_scale():
    torch.manual_seed(3)
    values = (torch.rand(4, 2, 6, 6, 6) + 1.0).requires_grad_()
    output = PackedDropout(0.25).train()(values)

    output.sum().backward()

    expected = (output != 0).float() / 0.75
    torch.testing.assert_close(values.grad, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_product_rounds_as_the_float_mask_product(dtype):
    # nn.Dropout multiplies by a float mask of zeros and scales, which gives these bits too.
    torch.manual_seed(4)
    values = (torch.rand(4, 3, 6, 6, 6, dtype=dtype) + 1.0).requires_grad_()
    output = PackedDropout(0.3).train()(values)
    upstream = torch.rand_like(output)

    output.backward(upstream)

    float_mask = (output != 0).to(dtype) * (1.0 / 0.7)
    assert torch.equal(output, values.detach() * float_mask)
    assert torch.equal(values.grad, upstream * float_mask)


def test_masks_follow_manual_seed():
    values = torch.rand(4, 1000)
    layer = PackedDropout(0.5).train()

    torch.manual_seed(4)
    first, second = layer(values), layer(values)
    torch.manual_seed(4)
    again = layer(values)

    assert torch.equal(first, again)
    assert not torch.equal(first, second)


def test_eval_mode_and_rate_zero_return_the_input():
    values = torch.rand(4, 100)

    assert torch.equal(PackedDropout(0.25).eval()(values), values)
    assert torch.equal(PackedDropout(0.0).train()(values), values)


def test_matches_nn_dropout_statistics():
    # Same mean and variance of the output as nn.Dropout: only the random stream differs.
    torch.manual_seed(5)
    values = torch.ones(MANY)

    packed = PackedDropout(0.25).train()(values)
    bernoulli = nn.Dropout(0.25).train()(values)

    assert packed.mean().item() == pytest.approx(bernoulli.mean().item(), abs=3e-3)
    assert packed.var().item() == pytest.approx(bernoulli.var().item(), abs=3e-3)
