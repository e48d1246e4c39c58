"""The residual 3D CNN of the Keras script, with each Keras/PyTorch difference as an argument."""

import math
from collections.abc import Sequence

import torch
from torch import nn

from volreg.models.init import INIT_SCHEMES
from volreg.models.layers import Projection, make_batch_norm, make_conv, make_dropout
from volreg.options import check_choice

RESIDUAL_MODES = ("separate", "shared")


class ConvBlock(nn.Sequential):
    """Conv3d (same padding) → ReLU → BatchNorm3d → dropout, the order of the Keras script."""

    def __init__(self, conv: nn.Conv3d, norm: nn.Module, dropout: nn.Module) -> None:
        super().__init__()
        self.conv = conv
        # In place: the convolution's backward pass does not need its output.
        self.act = nn.ReLU(inplace=True)
        self.norm = norm
        self.drop = dropout


class ResidualCNN3d(nn.Module):
    """Residual 3D CNN regressor: (N, C_in, D, H, W) volumes to (N, P) targets.

    Every conv block but the last is followed by the addition of a 1×1×1 projection of the
    network *input*. The head is flatten → Linear → dropout → Linear … → Linear(P) with no
    activations, as in the Keras script.

    Args:
        in_channels: input channels C_in.
        volume_shape: (D, H, W) of the input; the flatten size follows from it.
        widths: output channels of the conv blocks.
        kernel_size: conv kernel edge (odd, so that "same" padding is symmetric as in Keras).
        head_widths: hidden Linear widths; dropout follows the first one.
        num_targets: outputs P.
        dropout_rate: drop probability of every dropout layer.
        dropout: "element" (Keras Dropout) or "channel" (nn.Dropout3d after the conv blocks;
            the head dropout stays element-wise because Dropout3d drops whole samples on 2-D input).
        dropout_masks: how element dropout draws masks: "packed" (eight or four per 64-bit
            random number, see ``volreg.models.dropout``) or "bernoulli" (``nn.Dropout``).
        residual: "separate" (a projection per residual add, as each Keras call builds a new
            layer) or "shared" (one projection module reused, tying the weights).
        bn_momentum: BatchNorm momentum in PyTorch's convention. Keras momentum 0.99 is 0.01 here.
        bn_eps: BatchNorm epsilon (Keras 1e-3, PyTorch 1e-5).
        bn_running_var: "biased" (Keras's moving variance) or "unbiased" (PyTorch's).
        init: "keras", "port" or "torch"; see ``volreg.models.init``.
        conv_algorithm: how the conv blocks compute: "direct" (torch's conv3d), "fourier"
            (per-frequency products after DFTs, ``volreg.models.fourier_conv``) or "auto"
            (fourier on the CPU where the shapes make it faster, see ``AutoConv3d``).
    """

    def __init__(
        self,
        in_channels: int = 1,
        volume_shape: Sequence[int] = (16, 16, 16),
        widths: Sequence[int] = (64, 64, 128),
        kernel_size: int = 5,
        head_widths: Sequence[int] = (64, 32),
        num_targets: int = 1,
        dropout_rate: float = 0.25,
        dropout: str = "element",
        dropout_masks: str = "packed",
        residual: str = "separate",
        bn_momentum: float = 0.01,
        bn_eps: float = 1e-3,
        bn_running_var: str = "biased",
        init: str = "keras",
        conv_algorithm: str = "direct",
    ) -> None:
        super().__init__()
        volume_shape = tuple(volume_shape)
        widths = tuple(widths)
        head_widths = tuple(head_widths)
        check_choice("residual", residual, RESIDUAL_MODES)
        check_choice("init", init, INIT_SCHEMES)
        _check_sizes(in_channels, volume_shape, widths, kernel_size, head_widths, num_targets)

        self.in_channels = in_channels
        self.volume_shape = volume_shape
        self.num_targets = num_targets

        # Conv blocks.
        blocks = []
        channels = in_channels
        for width in widths:
            norm = make_batch_norm(width, bn_momentum, bn_eps, bn_running_var)
            blocks.append(
                ConvBlock(
                    make_conv(channels, width, kernel_size, conv_algorithm),
                    norm,
                    make_dropout(dropout, dropout_rate, dropout_masks),
                )
            )
            channels = width
        self.blocks = nn.ModuleList(blocks)

        # Residual projections of the input, added after every block but the last.
        residual_widths = widths[:-1]
        if residual == "shared":
            if len(set(residual_widths)) > 1:
                raise ValueError(
                    f"residual='shared' reuses one projection, so widths[:-1] must be equal; "
                    f"got widths={list(widths)}. Use residual='separate' or equal widths."
                )
            residual_widths = residual_widths[:1]
        self.projections = nn.ModuleList(
            Projection(in_channels, width) for width in residual_widths
        )

        # Head.
        flat_features = widths[-1] * math.prod(volume_shape)
        hidden = []
        for width in head_widths:
            hidden.append(nn.Linear(flat_features, width))
            flat_features = width
        self.hidden = nn.ModuleList(hidden)
        self.head_dropout = make_dropout("element", dropout_rate, dropout_masks)
        self.output_layer = nn.Linear(flat_features, num_targets)

        INIT_SCHEMES[init](self)

    def forward(self, volume: torch.Tensor) -> torch.Tensor:
        x = volume  # (N, C_in, D, H, W)
        last = len(self.blocks) - 1
        for index, block in enumerate(self.blocks):
            x = block(x)  # (N, C_i, D, H, W)
            if index < last:
                projection = self.projections[index % len(self.projections)]
                x = x + projection(volume)

        x = x.flatten(1)  # (N, C·D·H·W), the order Keras Flatten uses on channels_first tensors
        for index, layer in enumerate(self.hidden):
            x = layer(x)
            if index == 0:
                x = self.head_dropout(x)
        return self.output_layer(x)  # (N, P)


def _check_sizes(
    in_channels: int,
    volume_shape: tuple[int, ...],
    widths: tuple[int, ...],
    kernel_size: int,
    head_widths: tuple[int, ...],
    num_targets: int,
) -> None:
    if in_channels < 1:
        raise ValueError(f"invalid in_channels={in_channels}: it must be at least 1")
    if len(volume_shape) != 3 or min(volume_shape) < 1:
        raise ValueError(
            f"invalid volume_shape={list(volume_shape)}: expected three positive sizes (D, H, W)"
        )
    if not widths or min(widths) < 1:
        raise ValueError(f"invalid widths={list(widths)}: expected one or more positive widths")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(
            f"invalid kernel_size={kernel_size}: it must be a positive odd number, "
            "so that 'same' padding is symmetric as in Keras"
        )
    if not head_widths or min(head_widths) < 1:
        raise ValueError(
            f"invalid head_widths={list(head_widths)}: expected one or more positive widths"
        )
    if num_targets < 1:
        raise ValueError(f"invalid num_targets={num_targets}: it must be at least 1")
