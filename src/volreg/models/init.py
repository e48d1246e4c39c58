"""Weight initialisation schemes, applied once at the end of the network's constructor."""

from collections.abc import Callable

from torch import nn

WEIGHTED_LAYERS = (nn.Conv3d, nn.Linear)


def _glorot_weights_zero_biases(net: nn.Module) -> None:
    # xavier_uniform_ computes fans as Keras glorot_uniform does (channels·k³ for a Conv3d),
    # so the bound sqrt(6 / (fan_in + fan_out)) is the same.
    for layer in net.modules():
        if isinstance(layer, WEIGHTED_LAYERS):
            nn.init.xavier_uniform_(layer.weight)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


def init_keras(net: nn.Module) -> None:
    """Glorot-uniform weights and zero biases everywhere, the Keras defaults."""
    _glorot_weights_zero_biases(net)


def init_port(net: nn.Module) -> None:
    """Xavier-uniform weights and zero biases, except the output layer's bias.

    The usual port zeroes biases in a loop over the hidden layers and leaves the output
    Linear as constructed, so its bias stays PyTorch's U(±1/sqrt(fan_in)).
    """
    output_bias = net.output_layer.bias.detach().clone()
    _glorot_weights_zero_biases(net)
    net.output_layer.bias.data.copy_(output_bias)


def init_torch(net: nn.Module) -> None:
    """Keep PyTorch's constructor defaults: kaiming_uniform_(a=sqrt(5)), i.e. U(±1/sqrt(fan_in))."""


INIT_SCHEMES: dict[str, Callable[[nn.Module], None]] = {
    "keras": init_keras,
    "port": init_port,
    "torch": init_torch,
}
