"""Map the layer graph of a Keras functional model config onto ResidualCNN3d settings.

The graph is read backwards from the output: the Dense head down to Flatten, then each block
Conv3D(relu, same) → BatchNormalization → dropout, with an Add of a 1×1×1 Conv3D projection of
the input after every block but the last. Any layer, argument or connection that ResidualCNN3d
cannot reproduce raises KerasArchitectureError naming the Keras layer. Only the JSON config is
read, so no code stored in the model is run.
"""

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from volreg.interop.keras_weights import KerasWeights

SUPPORTED_LAYERS = (
    "InputLayer",
    "Conv3D",
    "BatchNormalization",
    "Dropout",
    "SpatialDropout3D",
    "Add",
    "Flatten",
    "Dense",
)
FUNCTIONAL_MODELS = ("Functional", "Model")
DROPOUT_KINDS = {"Dropout": "element", "SpatialDropout3D": "channel"}
DATA_FORMATS = ("channels_first", "channels_last")
# Arguments that would change training but have no ResidualCNN3d counterpart; they must be unset.
UNSET_ARGUMENTS = (
    "kernel_regularizer",
    "bias_regularizer",
    "activity_regularizer",
    "kernel_constraint",
    "bias_constraint",
    "beta_regularizer",
    "gamma_regularizer",
    "beta_constraint",
    "gamma_constraint",
    "virtual_batch_size",
    "adjustment",
    "renorm_clipping",
    "noise_shape",
)


class KerasArchitectureError(ValueError):
    """A Keras model that ResidualCNN3d cannot reproduce; the message names the Keras layer."""


@dataclass
class KerasLayer:
    """One layer of the config and the input tensors of each of its calls."""

    name: str
    class_name: str
    config: dict[str, Any]
    # calls[k]: (layer name, call index) of each input tensor of the layer's k-th call.
    calls: list[list[tuple[str, int]]]

    @property
    def label(self) -> str:
        return f"layer '{self.name}' ({self.class_name})"


@dataclass
class KerasArchitecture:
    """ResidualCNN3d settings read from a Keras model, and the Keras layers behind each part.

    Attributes:
        net: keyword arguments of ResidualCNN3d.
        data_format: the Keras model's ``channels_first`` or ``channels_last`` input layout.
        flatten_channels_last: the first Dense layer's kernel rows are in (D, H, W, C) order.
        convs, norms, projections, dense: Keras layer names, in ResidualCNN3d's order;
            ``projections`` has one name when the model reuses one projection layer.
    """

    net: dict[str, Any]
    data_format: str
    flatten_channels_last: bool
    convs: list[str] = field(default_factory=list)
    norms: list[str] = field(default_factory=list)
    projections: list[str] = field(default_factory=list)
    dense: list[str] = field(default_factory=list)


@dataclass
class _Block:
    conv: KerasLayer
    norm: KerasLayer
    dropout: KerasLayer | None


def map_keras_model(config: dict[str, Any]) -> KerasArchitecture:
    """Return the ResidualCNN3d settings of a Keras model config (``model.to_json()``)."""
    layers, output = _read_graph(config)
    visited: set[str] = set()

    dense, head_dropout, flatten, ref = _read_head(layers, output, visited)
    blocks, projections, input_layer = _read_blocks(layers, ref, visited)
    unused = [layer for name, layer in layers.items() if name not in visited]
    if unused:
        raise KerasArchitectureError(
            f"{unused[0].label} is not on ResidualCNN3d's path from the input to the output: "
            "the model has a layer or branch that ResidualCNN3d does not have"
        )

    data_format = _data_format(blocks)
    in_channels, volume_shape = _input_shape(input_layer, data_format)
    net = {
        "in_channels": in_channels,
        "volume_shape": volume_shape,
        "widths": [int(block.conv.config["filters"]) for block in blocks],
        "kernel_size": _kernel_size(blocks),
        "head_widths": [int(layer.config["units"]) for layer in dense[:-1]],
        "num_targets": int(dense[-1].config["units"]),
        **_dropout_settings(blocks, head_dropout, dense[0]),
        "residual": _residual_mode(projections),
        **_batch_norm_settings(blocks, data_format),
        # The moving variance of Keras BatchNormalization is the biased batch variance.
        "bn_running_var": "biased",
        "init": "keras",
    }
    for projection in projections:
        _check_projection(projection, data_format)

    return KerasArchitecture(
        net=net,
        data_format=data_format,
        flatten_channels_last=_flatten_channels_last(flatten, data_format),
        convs=[block.conv.name for block in blocks],
        norms=[block.norm.name for block in blocks],
        projections=list(dict.fromkeys(layer.name for layer in projections)),
        dense=[layer.name for layer in dense],
    )


def collect_weights(
    architecture: KerasArchitecture, weights: dict[str, list[np.ndarray]]
) -> KerasWeights:
    """Gather the arrays of the mapped layers into KerasWeights, checking each layer's count."""

    def arrays(name: str, count: int) -> list[np.ndarray]:
        found = weights.get(name, [])
        if len(found) != count:
            raise KerasArchitectureError(
                f"layer '{name}' has {len(found)} stored weight arrays, expected {count}: the "
                "weights do not belong to this architecture"
            )
        return found

    return KerasWeights(
        convs=[arrays(name, 2) for name in architecture.convs],
        norms=[arrays(name, 4) for name in architecture.norms],
        projections=[arrays(name, 2) for name in architecture.projections],
        dense=[arrays(name, 2) for name in architecture.dense],
        channels_last=architecture.flatten_channels_last,
    )


# ---------------------------------------------------------------------- graph


def _read_graph(config: dict[str, Any]) -> tuple[dict[str, KerasLayer], tuple[str, int]]:
    class_name = config.get("class_name")
    if class_name not in FUNCTIONAL_MODELS:
        raise KerasArchitectureError(
            f"the model is a {class_name}, not a functional model: ResidualCNN3d's residual adds "
            "need the functional API (keras.Model(inputs, outputs))"
        )
    body = config["config"]
    layers = {}
    for entry in body.get("layers", []):
        layer = _parse_layer(entry)
        layers[layer.name] = layer

    inputs = _tensor_list(body.get("input_layers"))
    outputs = _tensor_list(body.get("output_layers"))
    if len(inputs) != 1 or len(outputs) != 1:
        raise KerasArchitectureError(
            f"the model has {len(inputs)} inputs and {len(outputs)} outputs: ResidualCNN3d has "
            "one volume input and one output of all targets"
        )
    return layers, outputs[0]


def _parse_layer(entry: dict[str, Any]) -> KerasLayer:
    config = entry.get("config", {})
    name = str(entry.get("name") or config.get("name"))
    class_name = str(entry.get("class_name"))
    label = f"layer '{name}' ({class_name})"
    if class_name == "Lambda":
        raise KerasArchitectureError(
            f"{label} contains Python code, which volreg does not run: rebuild the model without "
            "Lambda layers"
        )
    module = entry.get("module")
    registered = entry.get("registered_name")
    custom = (module is not None and not str(module).startswith("keras")) or (
        registered is not None and registered != class_name
    )
    if custom or class_name not in SUPPORTED_LAYERS:
        kind = f"a custom object ({registered or module})" if custom else "not supported"
        raise KerasArchitectureError(
            f"{label} is {kind}: ResidualCNN3d is built only from {', '.join(SUPPORTED_LAYERS)}"
        )
    for argument in UNSET_ARGUMENTS:
        if config.get(argument) is not None:
            raise KerasArchitectureError(
                f"{label} sets {argument}={config[argument]!r}, which ResidualCNN3d does not have: "
                "remove it from the Keras model"
            )
    calls = [_call_inputs(node, label) for node in entry.get("inbound_nodes", [])]
    return KerasLayer(name, class_name, config, calls)


def _call_inputs(node: Any, label: str) -> list[tuple[str, int]]:
    # Keras 3: {"args": [...], "kwargs": {...}} with tensors as {"config": {"keras_history":
    # [layer, call, tensor]}}. tf.keras 2.x: [[layer, call, tensor, kwargs], ...].
    if isinstance(node, dict):
        refs: list[list[Any]] = []
        _find_histories(node.get("args", []), refs)
    else:
        refs = [list(item[:3]) for item in node]
    inputs = []
    for name, call, tensor in refs:
        if tensor != 0:
            raise KerasArchitectureError(f"{label} takes output {tensor} of layer '{name}'")
        inputs.append((str(name), int(call)))
    return inputs


def _find_histories(value: Any, found: list[list[Any]]) -> None:
    if isinstance(value, dict):
        history = value.get("config", {}).get("keras_history") if "config" in value else None
        if value.get("class_name") == "__keras_tensor__" and history is not None:
            found.append(list(history))
            return
        for item in value.values():
            _find_histories(item, found)
    elif isinstance(value, list):
        for item in value:
            _find_histories(item, found)


def _tensor_list(value: Any) -> list[tuple[str, int]]:
    # A single tensor is stored as [name, call, tensor], several as a list of those.
    if not value:
        return []
    if isinstance(value[0], str):
        value = [value]
    return [(str(item[0]), int(item[1])) for item in value]


def _producer(
    layers: dict[str, KerasLayer], ref: tuple[str, int], visited: set[str]
) -> tuple[KerasLayer, list[tuple[str, int]]]:
    """Return the layer behind tensor ``ref`` and the inputs of that call."""
    name, call = ref
    if name not in layers:
        raise KerasArchitectureError(
            f"the model config refers to layer '{name}', which its layer list lacks"
        )
    layer = layers[name]
    visited.add(name)
    if layer.class_name == "InputLayer":
        return layer, []
    if call >= len(layer.calls):
        raise KerasArchitectureError(f"{layer.label} has no call {call} in the config")
    return layer, layer.calls[call]


def _single_input(layer: KerasLayer, inputs: list[tuple[str, int]]) -> tuple[str, int]:
    if len(layer.calls) > 1:
        raise KerasArchitectureError(
            f"{layer.label} is called {len(layer.calls)} times: ResidualCNN3d shares no layer "
            "but the residual projection"
        )
    if len(inputs) != 1:
        raise KerasArchitectureError(f"{layer.label} takes {len(inputs)} inputs, expected 1")
    return inputs[0]


def _expect(layer: KerasLayer, classes: tuple[str, ...], where: str) -> None:
    if layer.class_name not in classes:
        raise KerasArchitectureError(
            f"{layer.label} does not fit ResidualCNN3d: expected {' or '.join(classes)} {where}"
        )


# ---------------------------------------------------------------------- head


def _read_head(
    layers: dict[str, KerasLayer], output: tuple[str, int], visited: set[str]
) -> tuple[list[KerasLayer], KerasLayer | None, KerasLayer, tuple[str, int]]:
    """Read Flatten → Dense → [Dropout] → Dense … → Dense(P) backwards from the output."""
    chain = []
    ref = output
    while True:
        layer, inputs = _producer(layers, ref, visited)
        if layer.class_name == "Flatten":
            flatten = layer
            ref = _single_input(layer, inputs)
            break
        _expect(layer, ("Dense", "Dropout"), "between Flatten and the output")
        chain.append(layer)
        ref = _single_input(layer, inputs)
    chain.reverse()

    dense = [layer for layer in chain if layer.class_name == "Dense"]
    if len(dense) < 2:
        raise KerasArchitectureError(
            f"{(dense or chain or [flatten])[-1].label}: ResidualCNN3d needs at least one hidden "
            "Dense layer between Flatten and the output Dense"
        )
    if chain[0].class_name != "Dense":
        raise KerasArchitectureError(
            f"{chain[0].label} directly follows Flatten: ResidualCNN3d puts a Dense layer first"
        )
    dropouts = [index for index, layer in enumerate(chain) if layer.class_name == "Dropout"]
    if any(index != 1 for index in dropouts):
        misplaced = next(chain[index] for index in dropouts if index != 1)
        raise KerasArchitectureError(
            f"{misplaced.label} does not fit ResidualCNN3d, whose head has dropout only after "
            f"the first Dense layer ('{dense[0].name}')"
        )
    for layer in dense:
        _check_dense(layer)
    head_dropout = chain[1] if dropouts else None
    return dense, head_dropout, flatten, ref


def _check_dense(layer: KerasLayer) -> None:
    activation = layer.config.get("activation")
    if activation not in (None, "linear"):
        raise KerasArchitectureError(
            f"{layer.label} has activation {activation!r}: ResidualCNN3d's Dense layers are "
            "linear, as in the Keras script"
        )
    if not layer.config.get("use_bias", True):
        raise KerasArchitectureError(
            f"{layer.label} has use_bias=False: every ResidualCNN3d Linear layer has a bias"
        )


# ---------------------------------------------------------------------- conv blocks


def _read_blocks(
    layers: dict[str, KerasLayer], ref: tuple[str, int], visited: set[str]
) -> tuple[list[_Block], list[KerasLayer], KerasLayer]:
    """Read the conv blocks and residual adds backwards from Flatten's input to the Input."""
    blocks: list[_Block] = []
    projections: list[KerasLayer] = []
    while True:
        block, ref = _read_block(layers, ref, visited)
        blocks.append(block)
        layer, inputs = _producer(layers, ref, visited)
        if layer.class_name == "InputLayer":
            break
        _expect(layer, ("Add",), f"or the Input before Conv3D '{block.conv.name}'")
        projection, ref = _split_add(layers, layer, inputs, visited)
        projections.append(projection)
    blocks.reverse()
    projections.reverse()
    return blocks, projections, layer


def _read_block(
    layers: dict[str, KerasLayer], ref: tuple[str, int], visited: set[str]
) -> tuple[_Block, tuple[str, int]]:
    layer, inputs = _producer(layers, ref, visited)
    dropout = None
    if layer.class_name in DROPOUT_KINDS:
        dropout = layer
        layer, inputs = _producer(layers, _single_input(layer, inputs), visited)
    if dropout is None:
        _expect(layer, ("BatchNormalization", *DROPOUT_KINDS), "at the end of a conv block")
    else:
        _expect(layer, ("BatchNormalization",), f"before dropout '{dropout.name}'")
    norm = layer
    layer, inputs = _producer(layers, _single_input(layer, inputs), visited)
    _expect(layer, ("Conv3D",), f"before BatchNormalization '{norm.name}'")
    conv = layer
    return _Block(conv, norm, dropout), _single_input(conv, inputs)


def _split_add(
    layers: dict[str, KerasLayer],
    add: KerasLayer,
    inputs: list[tuple[str, int]],
    visited: set[str],
) -> tuple[KerasLayer, tuple[str, int]]:
    """Return the projection operand of a residual Add and the tensor of the main path."""
    if len(add.calls) > 1 or len(inputs) != 2:
        raise KerasArchitectureError(
            f"{add.label} adds {len(inputs)} tensors in {len(add.calls)} call(s): ResidualCNN3d "
            "adds one projection of the input to one block output"
        )
    projection_operands = []
    for position, ref in enumerate(inputs):
        layer = layers.get(ref[0])
        if layer is None or layer.class_name != "Conv3D" or ref[1] >= len(layer.calls):
            continue
        sources = layer.calls[ref[1]]
        source = layers.get(sources[0][0]) if len(sources) == 1 else None
        if source is not None and source.class_name == "InputLayer":
            projection_operands.append(position)
    if len(projection_operands) != 1:
        raise KerasArchitectureError(
            f"{add.label} does not fit ResidualCNN3d: it must add a Conv3D of the model input "
            "(the residual projection) to the output of a conv block"
        )
    position = projection_operands[0]
    projection, _ = _producer(layers, inputs[position], visited)
    return projection, inputs[1 - position]


def _check_conv(layer: KerasLayer, data_format: str, activation: str, padding: str) -> None:
    config = layer.config
    wrong = []
    if config.get("data_format") != data_format:
        wrong.append(f"data_format={config.get('data_format')!r} (the model uses {data_format})")
    if config.get("activation", "linear") != activation:
        wrong.append(f"activation={config.get('activation')!r} (expected {activation!r})")
    # A 1×1×1 kernel gives the same output with either padding.
    if config.get("padding") != padding and _triple(config["kernel_size"]) != (1, 1, 1):
        wrong.append(f"padding={config.get('padding')!r} (expected {padding!r})")
    for argument in ("strides", "dilation_rate"):
        if any(value != 1 for value in _triple(config.get(argument, 1))):
            wrong.append(f"{argument}={config.get(argument)!r} (expected 1)")
    if config.get("groups", 1) != 1:
        wrong.append(f"groups={config.get('groups')!r} (expected 1)")
    if not config.get("use_bias", True):
        wrong.append("use_bias=False (every ResidualCNN3d conv has a bias)")
    if wrong:
        raise KerasArchitectureError(
            f"{layer.label} does not fit ResidualCNN3d: {'; '.join(wrong)}"
        )


def _check_projection(layer: KerasLayer, data_format: str) -> None:
    _check_conv(layer, data_format, "linear", "valid")
    if _triple(layer.config["kernel_size"]) != (1, 1, 1):
        raise KerasArchitectureError(
            f"{layer.label} has kernel_size={layer.config['kernel_size']}: ResidualCNN3d's "
            "residual projections are 1×1×1 convolutions"
        )


def _data_format(blocks: list[_Block]) -> str:
    data_format = blocks[0].conv.config.get("data_format")
    if data_format not in DATA_FORMATS:
        raise KerasArchitectureError(
            f"{blocks[0].conv.label} has data_format={data_format!r}: expected one of "
            f"{', '.join(DATA_FORMATS)}"
        )
    for block in blocks:
        _check_conv(block.conv, data_format, "relu", "same")
    return data_format


def _kernel_size(blocks: list[_Block]) -> int:
    sizes = {block.conv.name: _triple(block.conv.config["kernel_size"]) for block in blocks}
    first = sizes[blocks[0].conv.name]
    for name, size in sizes.items():
        if len(set(size)) != 1 or size != first:
            raise KerasArchitectureError(
                f"layer '{name}' (Conv3D) has kernel_size={list(size)}: ResidualCNN3d uses one "
                f"cubic kernel size for every block, here {list(first)}"
            )
    if first[0] % 2 == 0:
        raise KerasArchitectureError(
            f"layer '{blocks[0].conv.name}' (Conv3D) has an even kernel_size={first[0]}: Keras "
            "pads 'same' asymmetrically then, which ResidualCNN3d does not reproduce"
        )
    return first[0]


def _input_shape(layer: KerasLayer, data_format: str) -> tuple[int, list[int]]:
    shape = layer.config.get("batch_shape") or layer.config.get("batch_input_shape")
    if not shape or len(shape) != 5 or any(size is None for size in shape[1:]):
        raise KerasArchitectureError(
            f"{layer.label} has shape {shape}: expected a fixed 3-D volume with channels, "
            "(None, C, D, H, W) or (None, D, H, W, C)"
        )
    sizes = [int(size) for size in shape[1:]]
    if data_format == "channels_first":
        return sizes[0], sizes[1:]
    return sizes[3], sizes[:3]


# ---------------------------------------------------------------------- settings


def _dropout_settings(
    blocks: list[_Block], head_dropout: KerasLayer | None, first_dense: KerasLayer
) -> dict[str, Any]:
    """Return dropout kind and rate, which must be the same after every block and in the head."""
    places = [(f"after BatchNormalization '{b.norm.name}'", b.dropout) for b in blocks]
    places.append((f"after Dense '{first_dense.name}'", head_dropout))
    present = [layer for _, layer in places if layer is not None]
    if not present:
        return {"dropout_rate": 0.0, "dropout": "element"}
    missing = [where for where, layer in places if layer is None]
    if missing:
        raise KerasArchitectureError(
            f"the model has no dropout {missing[0]} but has dropout elsewhere "
            f"(layer '{present[0].name}'): ResidualCNN3d puts the same dropout after every "
            "conv block and after the first Dense layer"
        )

    rates = {layer.name: float(layer.config.get("rate", 0.0)) for layer in present}
    rate = rates[present[0].name]
    for name, other in rates.items():
        if other != rate:
            raise KerasArchitectureError(
                f"layer '{name}' has dropout rate {other}, but layer '{present[0].name}' has "
                f"{rate}: ResidualCNN3d uses one dropout_rate"
            )
    if head_dropout.class_name != "Dropout":
        raise KerasArchitectureError(
            f"{head_dropout.label} follows a Dense layer: ResidualCNN3d drops single values "
            "there, as Keras Dropout does"
        )
    kinds = {block.dropout.class_name for block in blocks}
    if len(kinds) > 1:
        raise KerasArchitectureError(
            f"{blocks[0].dropout.label} and the other conv-block dropouts differ in kind "
            f"({', '.join(sorted(kinds))}): ResidualCNN3d uses one kind for every block"
        )
    return {"dropout_rate": rate, "dropout": DROPOUT_KINDS[kinds.pop()]}


def _residual_mode(projections: list[KerasLayer]) -> str:
    names = [layer.name for layer in projections]
    if len(set(names)) == len(names):
        return "separate"
    if len(set(names)) == 1:
        return "shared"
    raise KerasArchitectureError(
        f"the residual adds use the projection layers {names}: ResidualCNN3d either gives every "
        "add its own projection or reuses one for all"
    )


def _batch_norm_settings(blocks: list[_Block], data_format: str) -> dict[str, float]:
    channel_axes = {1, -4} if data_format == "channels_first" else {-1, 4}
    first = blocks[0].norm
    momentum = float(first.config.get("momentum", 0.99))
    epsilon = float(first.config.get("epsilon", 1e-3))
    for block in blocks:
        config = block.norm.config
        axis = config.get("axis", -1)
        axes = axis if isinstance(axis, list) else [axis]
        if len(axes) != 1 or axes[0] not in channel_axes:
            raise KerasArchitectureError(
                f"{block.norm.label} normalises axis {axis}: the channel axis of a "
                f"{data_format} model is {sorted(channel_axes)[-1]}"
            )
        for argument in ("center", "scale"):
            if not config.get(argument, True):
                raise KerasArchitectureError(
                    f"{block.norm.label} has {argument}=False: BatchNorm3d in ResidualCNN3d "
                    "always learns both gamma and beta"
                )
        if config.get("renorm", False):
            raise KerasArchitectureError(
                f"{block.norm.label} uses batch renormalization, which BatchNorm3d does not have"
            )
        if (float(config.get("momentum", 0.99)), float(config.get("epsilon", 1e-3))) != (
            momentum,
            epsilon,
        ):
            raise KerasArchitectureError(
                f"{block.norm.label} has momentum {config.get('momentum')} and epsilon "
                f"{config.get('epsilon')}, but '{first.name}' has {momentum} and {epsilon}: "
                "ResidualCNN3d uses one momentum and one epsilon"
            )
    # Keras moving = m·moving + (1-m)·batch; PyTorch running = (1-m')·running + m'·batch.
    return {"bn_momentum": round(1.0 - momentum, 12), "bn_eps": epsilon}


def _flatten_channels_last(flatten: KerasLayer, data_format: str) -> bool:
    # Flatten(data_format="channels_first") moves the channel axis last before flattening, so
    # the Dense rows are in (D, H, W, C) order for a channels_first tensor. On a channels_last
    # tensor it would move the depth axis last instead, an order ResidualCNN3d cannot load.
    flatten_format = flatten.config.get("data_format", "channels_last")
    if data_format == "channels_first":
        return flatten_format == "channels_first"
    if flatten_format == "channels_first":
        raise KerasArchitectureError(
            f"{flatten.label} has data_format='channels_first' in a channels_last model, so it "
            "flattens in (H, W, C, D) order, which ResidualCNN3d does not reproduce"
        )
    return True


def _triple(value: Any) -> tuple[int, ...]:
    if isinstance(value, int):
        return (value, value, value)
    return tuple(int(item) for item in value)
