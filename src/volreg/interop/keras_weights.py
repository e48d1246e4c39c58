"""Copy Keras layer weights into a ResidualCNN3d."""

from dataclasses import dataclass, field

import numpy as np
import torch

from volreg.models import ResidualCNN3d


@dataclass
class KerasWeights:
    """Weights of the Keras residual CNN, each list as ``layer.get_weights()`` returns it.

    Attributes:
        convs: [kernel (kd, kh, kw, in, out), bias] per conv block.
        norms: [gamma, beta, moving_mean, moving_variance] per BatchNormalization.
        projections: [kernel, bias] per 1×1×1 residual Conv3D, in the order they are added.
        dense: [kernel (in, out), bias] per Dense layer, the output layer last.
        channels_last: the model flattened (N, D, H, W, C) tensors, so the first Dense
            kernel's rows are in (D, H, W, C) order.
    """

    convs: list[list[np.ndarray]]
    norms: list[list[np.ndarray]]
    projections: list[list[np.ndarray]]
    dense: list[list[np.ndarray]]
    channels_last: bool = field(default=False)


def load_keras_weights(net: ResidualCNN3d, weights: KerasWeights) -> None:
    """Copy ``weights`` into ``net`` in place, checking every shape on the way."""
    state = {}
    if len(weights.convs) != len(net.blocks) or len(weights.norms) != len(net.blocks):
        raise ValueError(
            f"the Keras model has {len(weights.convs)} conv and {len(weights.norms)} "
            f"BatchNormalization layers, but the network has {len(net.blocks)} blocks"
        )
    for index, (conv, norm) in enumerate(zip(weights.convs, weights.norms, strict=True)):
        prefix = f"blocks.{index}"
        state[f"{prefix}.conv.weight"] = _conv_kernel(conv[0])
        state[f"{prefix}.conv.bias"] = conv[1]
        for name, value in zip(
            ("weight", "bias", "running_mean", "running_var"), norm, strict=True
        ):
            state[f"{prefix}.norm.{name}"] = value

    if len(weights.projections) != len(net.projections):
        raise ValueError(
            f"the Keras model has {len(weights.projections)} residual projections, "
            f"but the network has {len(net.projections)}; set residual='separate' "
            "for a Keras model that calls a new Conv3D per residual add"
        )
    for index, (kernel, bias) in enumerate(weights.projections):
        state[f"projections.{index}.weight"] = _conv_kernel(kernel)
        state[f"projections.{index}.bias"] = bias

    linear_names = [f"hidden.{index}" for index in range(len(net.hidden))] + ["output_layer"]
    if len(weights.dense) != len(linear_names):
        raise ValueError(
            f"the Keras model has {len(weights.dense)} Dense layers, but the network "
            f"has {len(linear_names)} Linear layers"
        )
    for index, (name, (kernel, bias)) in enumerate(zip(linear_names, weights.dense, strict=True)):
        if index == 0 and weights.channels_last:
            kernel = _channels_first_rows(kernel, net.volume_shape)
        state[f"{name}.weight"] = kernel.T
        state[f"{name}.bias"] = bias

    _copy_checked(net, state)


def _conv_kernel(kernel: np.ndarray) -> np.ndarray:
    # Keras Conv3D kernel (kd, kh, kw, in, out) → torch Conv3d weight (out, in, kd, kh, kw).
    return np.transpose(kernel, (4, 3, 0, 1, 2))


def _channels_first_rows(kernel: np.ndarray, volume_shape: tuple[int, ...]) -> np.ndarray:
    # Rows in (D, H, W, C) order, as Flatten saw a channels_last tensor → (C, D, H, W) order.
    depth, height, width = volume_shape
    channels = kernel.shape[0] // (depth * height * width)
    blocks = kernel.reshape(depth, height, width, channels, kernel.shape[1])
    return blocks.transpose(3, 0, 1, 2, 4).reshape(kernel.shape)


def _copy_checked(net: ResidualCNN3d, state: dict[str, np.ndarray]) -> None:
    own = net.state_dict()
    for name, value in state.items():
        if tuple(own[name].shape) != tuple(value.shape):
            raise ValueError(
                f"shape mismatch for {name}: the network has {tuple(own[name].shape)}, "
                f"the Keras weights have {tuple(value.shape)}"
            )
        own[name] = torch.as_tensor(np.ascontiguousarray(value), dtype=own[name].dtype)
    net.load_state_dict(own)
