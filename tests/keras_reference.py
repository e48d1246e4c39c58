"""The Keras 3 model of the Keras script at test sizes, and its weights in volreg's layout."""

import keras
import numpy as np

from volreg.interop import KerasWeights

SMALL = {
    "in_channels": 1,
    "volume_shape": (8, 8, 8),
    "widths": (4, 4, 8),
    "kernel_size": 5,
    "head_widths": (16, 8),
    "num_targets": 1,
}


def build_keras_model(
    in_channels,
    volume_shape,
    widths,
    kernel_size,
    head_widths,
    num_targets,
    dropout_rate=0.0,
    channels_last=False,
):
    """Build the residual CNN as the Keras script writes it: a new Conv3D per residual add."""
    data_format = "channels_last" if channels_last else "channels_first"
    channel_axis = -1 if channels_last else 1
    shape = (*volume_shape, in_channels) if channels_last else (in_channels, *volume_shape)
    inputs = keras.Input(shape)

    x = inputs
    for index, width in enumerate(widths):
        x = keras.layers.Conv3D(
            width,
            kernel_size,
            activation="relu",
            padding="same",
            data_format=data_format,
            name=f"conv{index}",
        )(x)
        x = keras.layers.BatchNormalization(axis=channel_axis, name=f"bn{index}")(x)
        x = keras.layers.Dropout(dropout_rate, name=f"drop{index}")(x)
        if index < len(widths) - 1:
            projection = keras.layers.Conv3D(
                width, 1, data_format=data_format, name=f"projection{index}"
            )(inputs)
            x = keras.layers.Add(name=f"add{index}")([x, projection])

    x = keras.layers.Flatten(name="flatten")(x)
    for index, width in enumerate(head_widths):
        x = keras.layers.Dense(width, name=f"dense{index}")(x)
        if index == 0:
            x = keras.layers.Dropout(dropout_rate, name="head_drop")(x)
    outputs = keras.layers.Dense(num_targets, name="output")(x)
    return keras.Model(inputs, outputs)


def keras_weights(model, channels_last=False):
    """Collect the model's weights by the layer names ``build_keras_model`` gives."""

    def get(name):
        return [np.asarray(w) for w in model.get_layer(name).get_weights()]

    def layers(prefix):
        return sorted(
            (layer.name for layer in model.layers if layer.name.startswith(prefix)),
            key=lambda name: int(name[len(prefix) :]),
        )

    return KerasWeights(
        convs=[get(name) for name in layers("conv")],
        norms=[get(name) for name in layers("bn")],
        projections=[get(name) for name in layers("projection")],
        dense=[get(name) for name in layers("dense")] + [get("output")],
        channels_last=channels_last,
    )
