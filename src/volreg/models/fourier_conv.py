"""Same-padded 3D convolution computed in the frequency domain, transforms as matrix products.

A direct convolution of C input channels with a k³ kernel does C·k³ multiply-adds per output
value: 2000 for 16 channels and k = 5. After a discrete Fourier transform the convolution
becomes one product per frequency, so mixing the channels costs C complex multiply-adds per
output frequency, plus the transforms of the input, the kernel and the output. On 16³
volumes that is several times less arithmetic than the direct convolution.

The transforms are not FFT calls. Each is three products with small DFT matrices, one per
axis (16 samples to 18 frequencies here). The matrices also zero-pad the input and crop the
output, and each product writes its result in the layout the next one reads, so the data is
never transposed on its own. The circular convolution of an FFT is avoided by transform lengths
of size + k//2 per axis: the values that wrap around land in the padding.

Numerics: float32 results differ from the direct convolution by float32 rounding (about 1e-6
relative to the largest output, 1e-5 for the weight gradient of 64→128 channels). The error
spreads over the volume: near a small value it follows the largest value of the volume, not
the local one, so inputs of very uneven magnitude are better standardized.

Layout of a spectrum: ``(2, F0, F1, F2, M)`` holding the real and the imaginary part (planar),
the frequencies of the three axes (the last axis keeps the non-negative half, as ``rfft``), and
the M = batch·channels signals.
"""

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import NamedTuple

import torch
from torch import nn
from torch.autograd.function import once_differentiable


def _phases(count: int, positions: Sequence[int], length: int) -> torch.Tensor:
    """2π·f·t/length for frequencies f < count (rows) and sample positions t (columns)."""
    frequency = torch.arange(count, dtype=torch.float64)[:, None]
    position = torch.tensor(positions, dtype=torch.float64)[None, :]
    return 2 * math.pi * frequency * position / length


def _real_to_half_spectrum(positions: Sequence[int], length: int) -> torch.Tensor:
    """(2·F, S): real samples to the planar half spectrum, rows ordered (part, f)."""
    phase = _phases(length // 2 + 1, positions, length)
    return torch.cat([phase.cos(), -phase.sin()])


def _complex_to_spectrum(positions: Sequence[int], length: int) -> torch.Tensor:
    """(2·F, 2·S): planar complex samples, columns (t, part), to the spectrum, rows (part, f)."""
    phase = _phases(length, positions, length)
    cos, sin = phase.cos(), phase.sin()
    # e^{-iφ}(re + i·im) = (re·cos + im·sin) + i(im·cos - re·sin)
    matrix = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)])
    return matrix.reshape(2 * len(cos), 2 * len(positions))


def _spectrum_to_complex(positions: Sequence[int], length: int) -> torch.Tensor:
    """(2·S, 2·F): planar spectrum, columns (part, f), to complex samples, rows (t, part)."""
    phase = _phases(length, positions, length).T
    cos, sin = phase.cos() / length, phase.sin() / length
    # e^{+iφ}(re + i·im)/length = (re·cos - im·sin) + i(re·sin + im·cos)
    matrix = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
    return matrix.reshape(2 * len(positions), 2 * len(cos.T))


def _half_spectrum_to_real(positions: Sequence[int], length: int) -> torch.Tensor:
    """(S, 2·F): planar half spectrum to real samples, as ``irfft`` reads it."""
    phase = _phases(length // 2 + 1, positions, length).T
    # Every frequency but 0 and length/2 stands for itself and its mirror image.
    weight = torch.full((phase.shape[1],), 2.0, dtype=torch.float64)
    weight[0] = 1.0
    if length % 2 == 0:
        weight[-1] = 1.0
    return torch.cat([phase.cos() * weight, -phase.sin() * weight], 1) / length


class _Axes(NamedTuple):
    """DFT matrices of the three axes, in the order they are applied: W, H, D or D, H, W."""

    first: torch.Tensor
    second: torch.Tensor
    third: torch.Tensor


class _Plan(NamedTuple):
    lengths: tuple[int, int, int]
    frequencies: tuple[int, int, int]
    volume_to_spectrum: _Axes
    spectrum_to_volume: _Axes
    kernel_to_spectrum: _Axes
    spectrum_to_kernel: _Axes


def _build_plan(
    size: tuple[int, int, int], kernel_size: int, device: torch.device, dtype: torch.dtype
) -> _Plan:
    pad = kernel_size // 2
    lengths = tuple(edge + pad for edge in size)
    volume = [list(range(edge)) for edge in size]
    # Kernel taps sit at offsets -pad..pad, so that the product is a centred correlation.
    taps = list(range(-pad, pad + 1))

    def to_spectrum(positions: list[list[int]]) -> _Axes:
        return _Axes(
            _real_to_half_spectrum(positions[2], lengths[2]),
            _complex_to_spectrum(positions[1], lengths[1]),
            _complex_to_spectrum(positions[0], lengths[0]),
        )

    def from_spectrum(positions: list[list[int]]) -> _Axes:
        return _Axes(
            _spectrum_to_complex(positions[0], lengths[0]),
            _spectrum_to_complex(positions[1], lengths[1]),
            _half_spectrum_to_real(positions[2], lengths[2]),
        )

    def on_device(axes: _Axes) -> _Axes:
        return _Axes(*(matrix.to(device=device, dtype=dtype) for matrix in axes))

    return _Plan(
        lengths=lengths,
        frequencies=(lengths[0], lengths[1], lengths[2] // 2 + 1),
        volume_to_spectrum=on_device(to_spectrum(volume)),
        spectrum_to_volume=on_device(from_spectrum(volume)),
        kernel_to_spectrum=on_device(to_spectrum([taps] * 3)),
        spectrum_to_kernel=on_device(from_spectrum([taps] * 3)),
    )


def to_spectrum(signals: torch.Tensor, axes: _Axes, frequencies: tuple[int, ...]) -> torch.Tensor:
    """(M, S0, S1, S2) real signals to their (2, F0, F1, F2, M) planar spectrum."""
    count, s0, s1, s2 = signals.shape
    f0, f1, f2 = frequencies
    along_w, along_h, along_d = axes
    # W: (S0·S1 lines, S2, M) read as transposed matrices, so the signals need no transpose.
    lines = signals.reshape(count, s0 * s1, s2).permute(1, 2, 0)
    z = torch.bmm(along_w.expand(s0 * s1, -1, -1), lines)  # (S0·S1, 2·F2, M)
    z = torch.matmul(along_h, z.view(s0, s1 * 2, f2 * count))  # (S0, 2·F1, F2·M)
    z = torch.mm(along_d, z.view(s0 * 2, f1 * f2 * count))  # (2·F0, F1·F2·M)
    return z.view(2, f0, f1, f2, count)


def to_signals(spectrum: torch.Tensor, axes: _Axes, out: torch.Tensor) -> torch.Tensor:
    """(2, F0, F1, F2, M) planar spectrum to real signals, written into ``out`` (M, S0, S1, S2)."""
    _, f0, f1, f2, count = spectrum.shape
    _, s0, s1, s2 = out.shape
    along_d, along_h, along_w = axes
    z = torch.mm(along_d, spectrum.reshape(2 * f0, f1 * f2 * count))  # (S0·2, F1·F2·M)
    z = torch.matmul(along_h, z.view(s0, 2 * f1, f2 * count))  # (S0, S1·2, F2·M)
    lines = z.view(s0 * s1, 2 * f2, count).transpose(1, 2)
    along_w = along_w.t().expand(s0 * s1, -1, -1)
    if torch.compiler.is_compiling():
        # torch.compile takes no strided out=; it fuses the transposing copy instead.
        out.copy_(torch.bmm(lines, along_w).transpose(0, 1).reshape(out.shape))
    else:
        # W: each line's product is written straight into the (M, S0, S1, S2) layout.
        torch.bmm(lines, along_w, out=out.view(count, s0 * s1, s2).transpose(0, 1))
    return out


def _complex_bmm(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, conjugate_b: bool = False
) -> torch.Tensor:
    """Batched a @ b, or a @ conj(b), of planar complex matrices (2, batch, rows, cols)."""
    sign = -1.0 if conjugate_b else 1.0
    torch.bmm(a[0], b[0], out=out[0]).baddbmm_(a[1], b[1], alpha=-sign)
    torch.bmm(a[1], b[0], out=out[1]).baddbmm_(a[0], b[1], alpha=sign)
    return out


_cached_plan = lru_cache(maxsize=16)(_build_plan)


def _plan(
    size: tuple[int, int, int], kernel_size: int, device: torch.device, dtype: torch.dtype
) -> _Plan:
    """Return the DFT matrices for this shape, device and dtype, built once per process."""
    if torch.compiler.is_compiling():
        # Traced into the graph instead: a cache lookup would split the graph at every conv.
        return _build_plan(size, kernel_size, device, dtype)
    return _cached_plan(size, kernel_size, device, dtype)


class _FourierConv3d(torch.autograd.Function):
    """Cross-correlation of (N, C, D, H, W) volumes with (O, C, k, k, k) kernels, same padding."""

    @staticmethod
    def forward(ctx, volumes: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
        n, c, *size = volumes.shape
        o, _, k, _, _ = kernels.shape
        plan = _plan(tuple(size), k, volumes.device, volumes.dtype)
        f = math.prod(plan.frequencies)
        x = to_spectrum(volumes.reshape(n * c, *size), plan.volume_to_spectrum, plan.frequencies)
        w = to_spectrum(kernels.reshape(o * c, k, k, k), plan.kernel_to_spectrum, plan.frequencies)
        x, w = x.view(2, f, n, c), w.view(2, f, o, c)
        # Correlation is a product with the kernel's conjugate spectrum.
        y = _complex_bmm(x, w.transpose(2, 3), volumes.new_empty(2, f, n, o), conjugate_b=True)
        out = volumes.new_empty(n, o, *size)
        y = y.view(2, *plan.frequencies, n * o)
        to_signals(y, plan.spectrum_to_volume, out.view(n * o, *size))
        ctx.save_for_backward(x, w)
        ctx.plan, ctx.size, ctx.kernel_size = plan, tuple(size), k
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        with torch.autocast(grad_out.device.type, enabled=False):
            return _FourierConv3d._gradients(ctx, grad_out)

    @staticmethod
    def _gradients(ctx, grad_out: torch.Tensor):
        x, w = ctx.saved_tensors
        plan, size, k = ctx.plan, ctx.size, ctx.kernel_size
        _, f, n, c = x.shape
        o = w.shape[2]
        g = to_spectrum(
            grad_out.reshape(n * o, *size), plan.volume_to_spectrum, plan.frequencies
        ).view(2, f, n, o)
        grad_volumes = grad_kernels = None
        if ctx.needs_input_grad[0]:
            # The adjoint of the correlation: a product with the kernel's spectrum itself.
            gx = _complex_bmm(g, w, x.new_empty(2, f, n, c))
            grad_volumes = x.new_empty(n, c, *size)
            to_signals(
                gx.view(2, *plan.frequencies, n * c),
                plan.spectrum_to_volume,
                grad_volumes.view(n * c, *size),
            )
        if ctx.needs_input_grad[1]:
            # Σ over the batch of g^T·conj(x) is the conjugate spectrum of the kernel gradient.
            gw = _complex_bmm(g.transpose(2, 3), x, x.new_empty(2, f, o, c), conjugate_b=True)
            gw[1].neg_()
            grad_kernels = x.new_empty(o, c, k, k, k)
            to_signals(
                gw.view(2, *plan.frequencies, o * c),
                plan.spectrum_to_kernel,
                grad_kernels.view(o * c, k, k, k),
            )
        return grad_volumes, grad_kernels


def fourier_conv3d(
    volumes: torch.Tensor, kernels: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """Compute ``F.conv3d(volumes, kernels, bias, padding="same")`` through DFTs.

    Takes batched (N, C, D, H, W) volumes and odd cubic kernels, and returns a contiguous
    tensor. Computes in the kernels' dtype, to which autocast casts the input. Saves the
    spectra of the volumes and of the kernels for the backward pass, about 1.6 times the
    volumes and 52 times the kernels at 16³ (the kernels' grows with the volume). The
    backward pass itself is not differentiable, so no double backward.
    """
    if kernels.shape[-1] % 2 == 0 or len(set(kernels.shape[2:])) != 1:
        raise ValueError(
            f"invalid kernel shape {list(kernels.shape[2:])}: fourier_conv3d takes odd cubic "
            "kernels; use conv_algorithm=direct for other shapes"
        )
    if volumes.dim() != 5 or volumes.shape[1] != kernels.shape[1]:
        raise ValueError(
            f"invalid volumes of shape {list(volumes.shape)} for kernels of shape "
            f"{list(kernels.shape)}: expected (N, {kernels.shape[1]}, D, H, W)"
        )
    if volumes.dtype != kernels.dtype and not _autocast_enabled(volumes.device.type):
        raise ValueError(
            f"volumes are {volumes.dtype} but kernels {kernels.dtype}: convert one to the other"
        )
    with torch.autocast(volumes.device.type, enabled=False):
        out = _FourierConv3d.apply(volumes.to(kernels.dtype), kernels)
        if bias is not None:
            out = out + bias.view(1, -1, 1, 1, 1)
    return out


def _transform_flops(signals: int, size: Sequence[int], lengths: Sequence[int]) -> int:
    """Return the FLOPs of one of the three-product transforms above for ``signals`` signals."""
    s0, s1, s2 = size
    f0, f1, f2 = lengths[0], lengths[1], lengths[2] // 2 + 1
    per_signal = 2 * (2 * f2 * s2 * s0 * s1 + 4 * f1 * s1 * s0 * f2 + 4 * f0 * s0 * f1 * f2)
    return signals * per_signal


def training_flops(
    batch: int, in_channels: int, out_channels: int, size: Sequence[int], kernel_size: int
) -> tuple[int, int]:
    """Return the FLOPs of a forward and backward pass: (direct, fourier) convolution."""
    lengths = [edge + kernel_size // 2 for edge in size]
    frequencies = lengths[0] * lengths[1] * (lengths[2] // 2 + 1)
    pairs = in_channels * out_channels
    # Forward, input gradient and kernel gradient, each a multiply-add per tap and pair.
    direct = 3 * 2 * batch * pairs * math.prod(size) * kernel_size**3
    # Each of the three is one complex product per frequency and pair (8 real FLOPs), and
    # each volume, output, kernel and their gradients is transformed once.
    fourier = (
        3 * 8 * batch * pairs * frequencies
        + 2 * _transform_flops(batch * (in_channels + out_channels), size, lengths)
        + 2 * _transform_flops(pairs, (kernel_size,) * 3, lengths)
    )
    return direct, fourier


def fourier_is_faster(
    batch: int, in_channels: int, out_channels: int, size: Sequence[int], kernel_size: int
) -> bool:
    """Estimate whether the Fourier path trains this convolution faster than the direct one.

    The thresholds are fitted to forward and backward passes timed on a 2-core Xeon (torch
    2.13, oneDNN). There the small products of the Fourier path ran at 20-90 GFLOP/s. The
    direct convolution ran at 250-500 GFLOP/s from 16 input channels, 50-130 below that.
    Under batch 4 the per-frequency products are too small to pay.
    """
    if batch < 4 or kernel_size < 3:
        return False
    direct, fourier = training_flops(batch, in_channels, out_channels, size, kernel_size)
    return direct >= (4 if in_channels < 16 else 6) * fourier


def _autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 has one function per device
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


class FourierConv3d(nn.Conv3d):
    """``nn.Conv3d`` with same padding whose convolution is computed by :func:`fourier_conv3d`.

    Parameters, state dict and initialisation are those of ``nn.Conv3d``, so weights move
    freely between this layer and a direct one.

    NOTE: measured on the CPU only; on a GPU it runs (plain matrix products) but has not been
    timed against cuDNN.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding="same")

    def uses_fourier(self, input: torch.Tensor) -> bool:
        return True

    def _conv_forward(
        self, input: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
    ) -> torch.Tensor:
        if not self.uses_fourier(input):
            return super()._conv_forward(input, weight, bias)
        if input.dim() == 4:  # one unbatched volume, which nn.Conv3d accepts too
            return fourier_conv3d(input.unsqueeze(0), weight, bias).squeeze(0)
        return fourier_conv3d(input, weight, bias)


class AutoConv3d(FourierConv3d):
    """Convolution that picks, per input shape, the faster of the two computations on the CPU.

    Fourier for float32 and float64 on the CPU where :func:`fourier_is_faster` estimates so
    from the shapes: at batch 16 on 16³ volumes with 5³ kernels, every block after a
    one-channel input. Direct on GPUs and under autocast, where bfloat16 products are faster.
    The choice depends on shapes only, so a seeded run repeats exactly.
    """

    def uses_fourier(self, input: torch.Tensor) -> bool:
        return (
            input.device.type == "cpu"
            and input.dtype in (torch.float32, torch.float64)
            and input.dim() == 5
            and not _autocast_enabled("cpu")
            and fourier_is_faster(
                input.shape[0],
                self.in_channels,
                self.out_channels,
                input.shape[2:],
                self.kernel_size[0],
            )
        )
