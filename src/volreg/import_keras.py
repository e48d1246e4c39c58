"""Import a trained Keras model as a volreg checkpoint.

``volreg-import-keras model.keras --out imported.ckpt [--check X.npy]`` reads ``.keras``,
legacy full-model ``.h5`` and ``.weights.h5`` files (the last with ``--config``) without
TensorFlow or Keras, and writes a checkpoint that ``volreg-eval`` and ``train.py ckpt_path=...``
accept. Nothing is written when the model does not fit ResidualCNN3d.
"""

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

import numpy as np
import torch

from volreg.interop.checkpoint import ImportedModel, import_keras_model, save_checkpoint
from volreg.interop.keras_file import KerasFileError
from volreg.interop.keras_graph import KerasArchitectureError

log = logging.getLogger(__name__)

# The settings that train.py's model.net group takes; the rest come from the data.
TRAIN_NET_KEYS = (
    "widths",
    "kernel_size",
    "head_widths",
    "dropout_rate",
    "dropout",
    "residual",
    "bn_momentum",
    "bn_eps",
    "bn_running_var",
    "init",
)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    try:
        imported = import_keras_model(args.model, args.config)
    except (KerasFileError, KerasArchitectureError) as error:
        print(f"error: {error}", file=sys.stderr)
        print(f"nothing written to {args.out}", file=sys.stderr)
        return 1

    # Inputs of the wrong layout are rejected before anything is written.
    volumes = load_check_inputs(args.check, imported) if args.check is not None else None

    print(describe(imported))
    save_checkpoint(imported.module, args.out)
    print("train on from it with the data the Keras model was trained on, e.g.:")
    print(
        f"  python train.py {' '.join(train_overrides(imported))} ckpt_path={args.out} "
        "data=files data.files.path=<your arrays.npz>"
    )

    if volumes is not None:
        check(imported, volumes, args.check, args.model, args.config)
    return 0


def load_check_inputs(inputs_path: Path, imported: ImportedModel) -> np.ndarray:
    """Load the --check inputs and check their layout against the Keras model's input."""
    volumes = np.load(inputs_path).astype(np.float32)
    to_channels_first(volumes, imported)
    return volumes


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="volreg-import-keras",
        description="Convert a Keras model of the residual 3D CNN into a volreg checkpoint.",
    )
    parser.add_argument(
        "model", type=Path, help="a .keras archive, a full-model .h5 file or a .weights.h5 file"
    )
    parser.add_argument(
        "--out", type=Path, required=True, help="path of the Lightning checkpoint to write"
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="architecture of a weights-only file: a model.to_json() file or a .keras archive",
    )
    parser.add_argument(
        "--check",
        type=Path,
        help="a .npy array of input volumes in the Keras model's layout: print the imported "
        "model's predictions and, when Keras is installed, their maximum difference from Keras",
    )
    return parser


def describe(imported: ImportedModel) -> str:
    """Return a summary of what the Keras model was mapped to."""
    architecture = imported.architecture
    lines = [f"read {imported.source} ({architecture.data_format})"]
    lines += [f"  {name}: {value}" for name, value in architecture.net.items()]
    return "\n".join(lines)


def train_overrides(imported: ImportedModel) -> list[str]:
    """Return the train.py overrides that rebuild the imported network."""
    net = imported.architecture.net
    overrides = ["model=keras_faithful"]
    for key in TRAIN_NET_KEYS:
        value = net[key]
        text = f"[{','.join(str(item) for item in value)}]" if isinstance(value, list) else value
        overrides.append(f"model.net.{key}={text}")
    return overrides


def check(
    imported: ImportedModel,
    volumes: np.ndarray,
    inputs_path: Path,
    model_path: Path,
    config_path: Path | None,
) -> None:
    """Print the imported model's predictions on the inputs and the difference from Keras."""
    channels_first = to_channels_first(volumes, imported)
    net = imported.net.eval()
    with torch.no_grad():
        prediction = net(torch.from_numpy(channels_first)).numpy()  # (N, P)
    np.set_printoptions(precision=6, suppress=True)
    print(f"predictions of the imported model on {inputs_path}, shape {prediction.shape}:")
    print(prediction)

    keras_prediction = keras_predict(model_path, config_path, volumes)
    if keras_prediction is None:
        return
    difference = float(np.abs(prediction - keras_prediction).max())
    print(f"max |difference| from Keras predict: {difference:.3g}")


def to_channels_first(volumes: np.ndarray, imported: ImportedModel) -> np.ndarray:
    """Check inputs against the Keras input shape and return them as (N, C, D, H, W)."""
    net = imported.architecture.net
    channels, shape = net["in_channels"], tuple(net["volume_shape"])
    channels_last = imported.architecture.data_format == "channels_last"
    expected = (*shape, channels) if channels_last else (channels, *shape)
    if volumes.shape[1:] != expected:
        raise SystemExit(
            f"error: the --check inputs have shape {volumes.shape}, but the Keras model takes "
            f"(N, {', '.join(str(size) for size in expected)}) "
            f"({imported.architecture.data_format}): save the inputs in the model's layout; "
            "nothing was written"
        )
    if channels_last:
        volumes = np.moveaxis(volumes, -1, 1)  # (N, D, H, W, C) → (N, C, D, H, W)
    return np.ascontiguousarray(volumes)


def keras_predict(
    model_path: Path, config_path: Path | None, volumes: np.ndarray
) -> np.ndarray | None:
    """Return Keras's own predictions, or None when Keras cannot be imported."""
    # Keras 3 needs a backend; without TensorFlow the torch backend is the one installed.
    if "KERAS_BACKEND" not in os.environ and importlib.util.find_spec("tensorflow") is None:
        os.environ["KERAS_BACKEND"] = "torch"
    try:
        import keras
    except ImportError as error:
        print(f"Keras is not importable ({error}): no comparison with Keras predict")
        return None

    # The model was already checked to contain no Lambda layers or custom objects, so
    # loading it in Keras runs no code from the file.
    if config_path is not None:
        if config_path.suffix == ".keras":
            model = keras.saving.load_model(config_path, compile=False)
        else:
            model = keras.models.model_from_json(config_path.read_text())
        model.load_weights(model_path)
    else:
        model = keras.saving.load_model(model_path, compile=False)
    return np.asarray(model.predict(volumes, verbose=0))


if __name__ == "__main__":
    sys.exit(main())
