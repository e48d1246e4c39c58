"""volreg-import-keras against Keras 3 models built and saved here in every supported format."""

import json

import h5py
import keras
import numpy as np
import pytest
import torch

from keras_reference import SMALL
from volreg.evaluation import load_module
from volreg.import_keras import main
from volreg.interop.checkpoint import import_keras_model
from volreg.interop.keras_file import KerasFileError, read_keras_model
from volreg.interop.keras_graph import KerasArchitectureError, map_keras_model

FORMATS = ["keras", "h5", "weights"]
LAYOUTS = ["channels_first", "channels_last"]


def build_model(
    channels_last=False,
    rate=0.25,
    spatial=False,
    shared=False,
    momentum=0.99,
    epsilon=1e-3,
    overrides=None,
    extra=None,
    seed=0,
):
    """Build the Keras script's model at SMALL sizes with random BatchNormalization statistics.

    ``overrides`` maps a layer name to constructor arguments that replace the defaults.
    ``extra`` inserts one layer that ResidualCNN3d does not have, named 'extra': "conv" (a
    second Conv3D in block 1), "dense" (before Flatten), "dropout" (after dense1), "lambda"
    (after Flatten) or "activation" (after dense0).
    """
    keras.utils.set_random_seed(seed)
    overrides = overrides or {}
    data_format = "channels_last" if channels_last else "channels_first"
    channel_axis = -1 if channels_last else 1
    shape = SMALL["volume_shape"]
    inputs = keras.Input((*shape, 1) if channels_last else (1, *shape), name="volume")

    def options(name, **defaults):
        return {**defaults, **overrides.get(name, {}), "name": name}

    def dropout(name):
        if spatial:
            return keras.layers.SpatialDropout3D(rate, data_format=data_format, name=name)
        return keras.layers.Dropout(rate, name=name)

    shared_projection = keras.layers.Conv3D(
        SMALL["widths"][0], 1, data_format=data_format, name="projection"
    )
    x = inputs
    widths = SMALL["widths"]
    for index, width in enumerate(widths):
        conv = options(
            f"conv{index}",
            kernel_size=SMALL["kernel_size"],
            activation="relu",
            padding="same",
            data_format=data_format,
        )
        x = keras.layers.Conv3D(width, **conv)(x)
        if extra == "conv" and index == 1:
            x = keras.layers.Conv3D(
                width, 3, padding="same", data_format=data_format, name="extra"
            )(x)
        norm = options(f"bn{index}", axis=channel_axis, momentum=momentum, epsilon=epsilon)
        x = keras.layers.BatchNormalization(**norm)(x)
        x = dropout(f"drop{index}")(x)
        if index < len(widths) - 1:
            if shared:
                projection = shared_projection(inputs)
            else:
                projection = keras.layers.Conv3D(
                    width, 1, data_format=data_format, name=f"projection{index}"
                )(inputs)
            x = keras.layers.Add(name=f"add{index}")([x, projection])

    if extra == "dense":
        x = keras.layers.Dense(8, name="extra")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    if extra == "lambda":
        x = keras.layers.Lambda(lambda tensor: tensor * 2.0, name="extra")(x)
    x = keras.layers.Dense(SMALL["head_widths"][0], **options("dense0"))(x)
    if extra == "activation":
        x = keras.layers.Activation("relu", name="extra")(x)
    x = keras.layers.Dropout(rate, name="head_drop")(x)
    x = keras.layers.Dense(SMALL["head_widths"][1], **options("dense1"))(x)
    if extra == "dropout":
        x = keras.layers.Dropout(rate, name="extra")(x)
    outputs = keras.layers.Dense(SMALL["num_targets"], **options("output"))(x)
    model = keras.Model(inputs, outputs)
    randomize_batch_norm(model, seed)
    return model


def randomize_batch_norm(model, seed):
    """Give every BatchNormalization layer random gamma, beta and moving statistics."""
    rng = np.random.default_rng(seed)
    ranges = {
        "gamma": (0.5, 1.5),
        "beta": (-0.2, 0.2),
        "moving_mean": (-0.1, 0.1),
        "moving_variance": (0.5, 2.0),
    }
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights(
                [rng.uniform(*ranges[weight.name], weight.shape) for weight in layer.weights]
            )


def save_model(model, directory, file_format):
    """Save ``model`` in ``file_format``; returns (model path, architecture path or None)."""
    if file_format == "keras":
        path = directory / "model.keras"
        model.save(path)
        return path, None
    if file_format == "h5":
        path = directory / "model.h5"
        model.save(path)
        return path, None
    path = directory / "model.weights.h5"
    model.save_weights(path)
    config = directory / "model.json"
    config.write_text(model.to_json())
    return path, config


def volumes(model, count=4, seed=1):
    """Inputs in [0, 1] in the model's own layout."""
    rng = np.random.default_rng(seed)
    return rng.random((count, *model.input_shape[1:]), dtype=np.float32)


def torch_predict(net, inputs, channels_last):
    if channels_last:
        inputs = np.moveaxis(inputs, -1, 1)  # (N, D, H, W, C) → (N, C, D, H, W)
    net.eval()
    with torch.no_grad():
        return net(torch.from_numpy(np.ascontiguousarray(inputs))).numpy()


def import_cli(model_path, out, config=None, check=None):
    argv = [str(model_path), "--out", str(out)]
    if config is not None:
        argv += ["--config", str(config)]
    if check is not None:
        argv += ["--check", str(check)]
    return main(argv)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("file_format", FORMATS)
def test_import_matches_keras_predict(tmp_path, file_format, layout):
    channels_last = layout == "channels_last"
    model = build_model(channels_last)
    model_path, config = save_model(model, tmp_path, file_format)
    inputs = volumes(model)
    out = tmp_path / "imported.ckpt"

    assert import_cli(model_path, out, config) == 0

    module = load_module(out)
    np.testing.assert_allclose(
        torch_predict(module.net, inputs, channels_last),
        model.predict(inputs, verbose=0),
        atol=1e-5,
        rtol=0,
    )


def tf_keras2_config(config):
    """Rewrite a Keras 3 config in the tf.keras 2.x form: nested-list inbound nodes."""

    def history(value, found):
        if isinstance(value, dict) and value.get("class_name") == "__keras_tensor__":
            found.append([*value["config"]["keras_history"], {}])
        elif isinstance(value, dict | list):
            for item in value.values() if isinstance(value, dict) else value:
                history(item, found)
        return found

    for layer in config["config"]["layers"]:
        for key in ("module", "registered_name", "build_config"):
            layer.pop(key, None)
        layer["inbound_nodes"] = [history(node["args"], []) for node in layer["inbound_nodes"]]
        if layer["class_name"] == "InputLayer":
            layer["config"]["batch_input_shape"] = layer["config"].pop("batch_shape")
    config["config"]["input_layers"] = [config["config"]["input_layers"]]
    config["config"]["output_layers"] = [config["config"]["output_layers"]]
    return config


def test_import_tf_keras2_h5(tmp_path):
    model = build_model(channels_last=True)
    path = tmp_path / "model.h5"
    model.save(path)
    with h5py.File(path, "r+") as file:
        config = tf_keras2_config(json.loads(file.attrs["model_config"]))
        file.attrs["model_config"] = json.dumps(config)
    inputs = volumes(model)

    imported = import_keras_model(path)

    np.testing.assert_allclose(
        torch_predict(imported.net, inputs, channels_last=True),
        model.predict(inputs, verbose=0),
        atol=1e-5,
        rtol=0,
    )


@pytest.mark.parametrize("file_format", FORMATS)
def test_import_settings_from_file(tmp_path, file_format):
    model = build_model(channels_last=True)
    model_path, config = save_model(model, tmp_path, file_format)

    net = import_keras_model(model_path, config).architecture.net

    assert net["in_channels"] == SMALL["in_channels"]
    assert net["volume_shape"] == list(SMALL["volume_shape"])
    assert net["widths"] == list(SMALL["widths"])
    assert net["kernel_size"] == SMALL["kernel_size"]
    assert net["head_widths"] == list(SMALL["head_widths"])
    assert net["num_targets"] == SMALL["num_targets"]
    assert net["dropout"] == "element"
    assert net["dropout_rate"] == 0.25
    assert net["residual"] == "separate"
    assert net["bn_momentum"] == pytest.approx(0.01)
    assert net["bn_eps"] == pytest.approx(1e-3)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_import_port_settings(tmp_path, layout):
    channels_last = layout == "channels_last"
    model = build_model(
        channels_last, rate=0.3, spatial=True, shared=True, momentum=0.9, epsilon=1e-2
    )
    model.save(tmp_path / "model.keras")
    inputs = volumes(model)

    imported = import_keras_model(tmp_path / "model.keras")
    net = imported.architecture.net

    assert net["dropout"] == "channel"
    assert net["dropout_rate"] == pytest.approx(0.3)
    assert net["residual"] == "shared"
    assert net["bn_momentum"] == pytest.approx(0.1)
    assert net["bn_eps"] == pytest.approx(1e-2)
    assert len(imported.net.projections) == 1
    np.testing.assert_allclose(
        torch_predict(imported.net, inputs, channels_last),
        model.predict(inputs, verbose=0),
        atol=1e-5,
        rtol=0,
    )


def test_checkpoint_contents(tmp_path):
    model = build_model()
    model.save(tmp_path / "model.keras")
    out = tmp_path / "imported.ckpt"

    assert import_cli(tmp_path / "model.keras", out) == 0

    checkpoint = torch.load(out, weights_only=True)
    settings = checkpoint["hyper_parameters"]["settings"]
    assert set(settings) == {
        "net",
        "loss",
        "optimizer",
        "scheduler",
        "memory_format",
        "compile",
        "tf32",
    }
    assert settings["net"]["_target_"] == "volreg.models.ResidualCNN3d"
    assert settings["net"]["volume_shape"] == list(SMALL["volume_shape"])
    assert settings["loss"]["kind"] == "l1"
    assert settings["tf32"] is False
    assert checkpoint["epoch"] == 0
    assert checkpoint["global_step"] == 0
    assert "pytorch-lightning_version" in checkpoint
    assert "loops" in checkpoint
    assert checkpoint["val_history"] == []
    assert "rng_states" not in checkpoint
    torch.testing.assert_close(checkpoint["state_dict"]["target_mean"], torch.zeros(1))
    torch.testing.assert_close(checkpoint["state_dict"]["target_std"], torch.ones(1))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_check_prints_difference(tmp_path, capsys, layout):
    model = build_model(layout == "channels_last")
    model.save(tmp_path / "model.keras")
    np.save(tmp_path / "inputs.npy", volumes(model, count=3))

    assert (
        import_cli(tmp_path / "model.keras", tmp_path / "out.ckpt", check=tmp_path / "inputs.npy")
        == 0
    )

    output = capsys.readouterr().out
    assert "shape (3, 1)" in output
    difference = float(output.split("max |difference| from Keras predict:")[1].split()[0])
    assert difference < 1e-5


def test_check_rejects_wrong_layout(tmp_path):
    model = build_model(channels_last=True)
    model.save(tmp_path / "model.keras")
    channels_first = np.moveaxis(volumes(model), -1, 1)
    np.save(tmp_path / "inputs.npy", channels_first)

    with pytest.raises(SystemExit, match=r"\(N, 8, 8, 8, 1\)"):
        import_cli(tmp_path / "model.keras", tmp_path / "out.ckpt", check=tmp_path / "inputs.npy")

    assert not (tmp_path / "out.ckpt").exists()


# ---------------------------------------------------------------------- rejected files


def test_malformed_keras_archive(tmp_path, capsys):
    path = tmp_path / "broken.keras"
    path.write_bytes(b"not a zip archive")
    out = tmp_path / "out.ckpt"

    assert import_cli(path, out) == 1

    assert "not a zip archive" in capsys.readouterr().err
    assert not out.exists()


def test_malformed_h5(tmp_path):
    path = tmp_path / "broken.h5"
    path.write_bytes(b"\x89HDF\r\n\x1a\n truncated")

    with pytest.raises(KerasFileError, match="not a readable HDF5 file"):
        read_keras_model(path)


def test_weights_without_config(tmp_path):
    path = tmp_path / "model.weights.h5"
    build_model().save_weights(path)

    with pytest.raises(KerasFileError, match="--config"):
        read_keras_model(path)


def test_invalid_config_json(tmp_path):
    path = tmp_path / "model.weights.h5"
    build_model().save_weights(path)
    config = tmp_path / "model.json"
    config.write_text('{"class_name": "Functional", "config": ')

    with pytest.raises(KerasFileError, match="valid JSON"):
        read_keras_model(path, config)


def test_lambda_layer_rejected(tmp_path, capsys):
    model = build_model(extra="lambda")
    model.save(tmp_path / "model.keras")
    out = tmp_path / "out.ckpt"

    assert import_cli(tmp_path / "model.keras", out) == 1

    error = capsys.readouterr().err
    assert "layer 'extra' (Lambda)" in error
    assert "Python code" in error
    assert not out.exists()


def test_custom_object_rejected(tmp_path):
    model = build_model()
    model.save_weights(tmp_path / "model.weights.h5")
    config = json.loads(model.to_json())
    layer = next(item for item in config["config"]["layers"] if item["name"] == "dense0")
    layer.update(class_name="MyDense", module="my_package.layers", registered_name="Custom>MyDense")
    (tmp_path / "model.json").write_text(json.dumps(config))

    with pytest.raises(KerasArchitectureError, match=r"layer 'dense0' \(MyDense\) is a custom"):
        import_keras_model(tmp_path / "model.weights.h5", tmp_path / "model.json")


MISFITS = [
    ({"extra": "conv"}, "layer 'conv1' (Conv3D)", "before Conv3D 'extra'"),
    ({"extra": "dense"}, "layer 'extra' (Dense)", "at the end of a conv block"),
    ({"extra": "dropout"}, "layer 'extra' (Dropout)", "only after the first Dense"),
    ({"extra": "activation"}, "layer 'extra' (Activation)", "not supported"),
    ({"overrides": {"conv1": {"activation": "tanh"}}}, "layer 'conv1' (Conv3D)", "'tanh'"),
    ({"overrides": {"dense1": {"activation": "tanh"}}}, "layer 'dense1' (Dense)", "'tanh'"),
    ({"overrides": {"dense0": {"use_bias": False}}}, "layer 'dense0' (Dense)", "use_bias=False"),
    ({"overrides": {"conv0": {"use_bias": False}}}, "layer 'conv0' (Conv3D)", "use_bias=False"),
    ({"overrides": {"bn2": {"center": False}}}, "layer 'bn2' (BatchNormalization)", "center=False"),
    ({"overrides": {"bn1": {"epsilon": 1e-5}}}, "layer 'bn1' (BatchNormalization)", "one momentum"),
    (
        {"overrides": {"conv2": {"kernel_size": 3}}},
        "layer 'conv2' (Conv3D)",
        "kernel_size=[3, 3, 3]",
    ),
    (
        {"overrides": {"dense0": {"kernel_regularizer": "l2"}}},
        "layer 'dense0' (Dense)",
        "kernel_regularizer",
    ),
]


@pytest.mark.parametrize(
    ("options", "layer", "reason"),
    MISFITS,
    ids=[
        "extra_conv",
        "extra_dense",
        "extra_dropout",
        "extra_activation",
        "conv_tanh",
        "dense_tanh",
        "dense_no_bias",
        "conv_no_bias",
        "bn_no_center",
        "bn_epsilon_differs",
        "kernel_size_differs",
        "regularizer",
    ],
)
def test_misfit_named_by_layer(tmp_path, options, layer, reason):
    config = json.loads(build_model(**options).to_json())

    with pytest.raises(KerasArchitectureError) as error:
        map_keras_model(config)

    assert layer in str(error.value)
    assert reason in str(error.value)


def test_misfit_writes_nothing(tmp_path, capsys):
    model = build_model(overrides={"dense1": {"activation": "tanh"}})
    model.save(tmp_path / "model.h5")
    out = tmp_path / "out.ckpt"

    assert import_cli(tmp_path / "model.h5", out) == 1

    assert "layer 'dense1' (Dense)" in capsys.readouterr().err
    assert not out.exists()
