"""Element dropout with masks drawn from packed random bits on the CPU.

On the CPU, ``nn.Dropout`` draws one Mersenne Twister number per value (``bernoulli_``), which
took as long as the forward convolutions of the width-16 network (docs/benchmarks.md). One
64-bit draw contains eight 7-bit or four 15-bit uniform integers, so a mask needs an eighth
or a quarter of the draws.
"""

import torch
from torch import nn

# Each 64-bit word from random_() contains 63 uniform bits (the sign bit is 0). Read as
# lanes of 8 or 16 bits and masked to their low 7 or 15 bits, every lane is uniform.
LANE_DTYPES = {7: torch.int8, 15: torch.int16}
WORD_BITS = 64


def lane_bits(rate: float) -> int:
    """Return 7 when ``rate`` is a multiple of 2**-7 (such as 0.25 or 0.5), else 15.

    7-bit lanes give such rates exactly with half the draws of 15-bit lanes.
    """
    return 7 if (rate * (1 << 7)).is_integer() else 15


def keep_mask(like: torch.Tensor, rate: float) -> torch.Tensor:
    """Return a bool mask shaped and strided like ``like``, True with probability 1 - rate.

    The drop probability is exact for rates that are multiples of 2**-7 and within 2**-16
    of ``rate`` otherwise (``round(rate·2**15) / 2**15``).
    """
    bits = lane_bits(rate)
    dtype = LANE_DTYPES[bits]
    lanes_per_word = WORD_BITS // (bits + 1)
    count = like.numel()
    words = torch.empty(
        (count + lanes_per_word - 1) // lanes_per_word, dtype=torch.int64, device=like.device
    )
    lanes = words.random_().view(dtype)[:count]
    keep = (lanes & ((1 << bits) - 1)) >= round(rate * (1 << bits))
    # Masks are independent per value, so the flat order can follow the input's memory
    # layout (contiguous or channels_last_3d) and the product needs no layout change.
    if like.dim() == 5 and like.is_contiguous(memory_format=torch.channels_last_3d):
        return keep.as_strided(like.shape, like.stride())
    return keep.view(like.shape)


class _ScaleByMask(torch.autograd.Function):
    """``input · keep · scale``, saving the 1-byte mask rather than a float copy of it."""

    @staticmethod
    def forward(ctx, input: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.save_for_backward(keep)
        ctx.scale = scale
        return _scale_by_mask(input, keep, scale)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        (keep,) = ctx.saved_tensors
        return _scale_by_mask(grad, keep, ctx.scale), None, None


def _scale_by_mask(values: torch.Tensor, keep: torch.Tensor, scale: float) -> torch.Tensor:
    # One pass: 0 + scale·(values·keep), with the 0-dim zero broadcast and the mask read as
    # uint8 (a free view of bool) and promoted to the values' dtype inside the kernel.
    # The product equals values·(keep·scale) bit for bit.
    zero = torch.zeros((), dtype=values.dtype, device=values.device)
    return torch.addcmul(zero, values, keep.view(torch.uint8), value=scale)


class PackedDropout(nn.Dropout):
    """``nn.Dropout`` (Keras ``Dropout``: single values, kept ones scaled by 1/(1 - rate)).

    In training on the CPU the mask comes from ``keep_mask``. On other devices, in eval mode
    and at rate 0 this is ``nn.Dropout``, because its GPU kernel already fuses mask and product.
    The masks follow ``torch.manual_seed`` as ``nn.Dropout``'s do, from a different stream.
    """

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0 or input.device.type != "cpu" or self.inplace:
            return super().forward(input)
        return _ScaleByMask.apply(input, keep_mask(input, self.p), 1.0 / (1.0 - self.p))
