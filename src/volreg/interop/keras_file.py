"""Read saved Keras models with h5py and json only: no TensorFlow or Keras import, no code run.

Three formats are read:

- ``.keras``: the Keras 3 zip archive with ``config.json`` and ``model.weights.h5``.
- ``.h5`` / ``.hdf5``: the legacy full-model HDF5 file of tf.keras 2.x (also written by Keras 3's
  ``model.save("x.h5")``), with the ``model_config`` attribute and the ``model_weights`` group.
- ``.weights.h5``: Keras 3 weights only, with the architecture from a ``model.to_json()`` file or
  a ``.keras`` archive. A legacy weights-only ``.h5`` (tf.keras ``save_weights``) works the same.
"""

import io
import json
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

KERAS_SUFFIXES = (".keras",)
WEIGHTS_SUFFIXES = (".weights.h5",)
LEGACY_SUFFIXES = (".h5", ".hdf5")
ARCHIVE_CONFIG = "config.json"
ARCHIVE_WEIGHTS = "model.weights.h5"


class KerasFileError(ValueError):
    """A Keras model file that is missing, malformed or in an unknown format."""


@dataclass
class KerasModelFile:
    """The contents of a saved Keras model.

    Attributes:
        config: the model's serialised config, ``{"class_name": ..., "config": {...}}``.
        weights: the arrays of each layer by its name in ``config``, in the order
            ``layer.get_weights()`` returns them; layers without weights are left out.
        source: the file(s) read, for messages.
    """

    config: dict[str, Any]
    weights: dict[str, list[np.ndarray]]
    source: str


def read_keras_model(path: str | Path, config_path: str | Path | None = None) -> KerasModelFile:
    """Read a ``.keras``, legacy ``.h5`` or ``.weights.h5`` file.

    ``config_path`` gives the architecture of a weights-only file: a JSON file written from
    ``model.to_json()`` or a ``.keras`` archive. For full-model files it replaces the stored
    config. Raises KerasFileError when a file is missing, malformed or in an unknown format.
    """
    path = Path(path)
    if not path.is_file():
        raise KerasFileError(f"Keras model file not found: {path}")
    config = read_architecture(config_path) if config_path is not None else None
    name = path.name.lower()

    if name.endswith(KERAS_SUFFIXES):
        stored_config, weights_bytes = _read_archive(path)
        config = config or stored_config
        with _open_hdf5(io.BytesIO(weights_bytes), f"{path}:{ARCHIVE_WEIGHTS}") as weights:
            layers = _keras3_weights(weights, config, f"{path}:{ARCHIVE_WEIGHTS}")
        return KerasModelFile(config, layers, str(path))

    if name.endswith(WEIGHTS_SUFFIXES + LEGACY_SUFFIXES):
        with _open_hdf5(path, str(path)) as weights:
            if config is None:
                config = _legacy_config(weights, path)
            if "layer_names" in weights.attrs or "model_weights" in weights:
                layers = _legacy_weights(weights, path)
            else:
                layers = _keras3_weights(weights, config, str(path))
        return KerasModelFile(config, layers, str(path))

    raise KerasFileError(
        f"unknown Keras file type: {path}. Expected a .keras archive, a full-model .h5 file, "
        "or a .weights.h5 file together with --config"
    )


def read_architecture(path: str | Path) -> dict[str, Any]:
    """Read a model config from a ``model.to_json()`` file or from a ``.keras`` archive."""
    path = Path(path)
    if not path.is_file():
        raise KerasFileError(f"Keras architecture file not found: {path}")
    if path.name.lower().endswith(KERAS_SUFFIXES):
        config, _ = _read_archive(path)
        return config
    return _parse_config(path.read_bytes(), str(path))


def _read_archive(path: Path) -> tuple[dict[str, Any], bytes]:
    try:
        with zipfile.ZipFile(path) as archive:
            members = set(archive.namelist())
            missing = [name for name in (ARCHIVE_CONFIG, ARCHIVE_WEIGHTS) if name not in members]
            if missing:
                raise KerasFileError(
                    f"{path} is a zip archive without {', '.join(missing)}: it is not a Keras 3 "
                    "model archive (sharded weights are not supported either)"
                )
            config_bytes = archive.read(ARCHIVE_CONFIG)
            weights_bytes = archive.read(ARCHIVE_WEIGHTS)
    except zipfile.BadZipFile as error:
        raise KerasFileError(
            f"{path} is not a valid .keras file: it is not a zip archive ({error})"
        ) from error
    return _parse_config(config_bytes, f"{path}:{ARCHIVE_CONFIG}"), weights_bytes


def _parse_config(text: bytes | str, source: str) -> dict[str, Any]:
    try:
        config = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise KerasFileError(
            f"{source} does not contain a valid JSON model config: {error}"
        ) from error
    if not isinstance(config, dict) or "class_name" not in config or "config" not in config:
        raise KerasFileError(
            f"{source} is not a Keras model config: expected a JSON object with 'class_name' "
            "and 'config', as model.to_json() writes"
        )
    return config


def _open_hdf5(source: Path | io.BytesIO, label: str) -> h5py.File:
    try:
        return h5py.File(source, "r")
    except OSError as error:
        raise KerasFileError(f"{label} is not a readable HDF5 file: {error}") from error


def _legacy_config(file: h5py.File, path: Path) -> dict[str, Any]:
    if "model_config" not in file.attrs:
        raise KerasFileError(
            f"{path} contains no model config (no 'model_config' attribute), only "
            "weights: give the architecture with --config (a model.to_json() file or a .keras "
            "archive)"
        )
    return _parse_config(_text(file.attrs["model_config"]), f"{path} (model_config)")


def _legacy_weights(file: h5py.File, path: Path) -> dict[str, list[np.ndarray]]:
    # Full-model files keep the weights in 'model_weights'; save_weights files at the root.
    group = file["model_weights"] if "model_weights" in file else file
    weights = {}
    for layer_name in _name_list(group, "layer_names", path):
        if layer_name not in group:
            raise KerasFileError(f"{path} lists layer '{layer_name}' but has no group for it")
        layer_group = group[layer_name]
        names = _name_list(layer_group, "weight_names", path)
        missing = [name for name in names if name not in layer_group]
        if missing:
            raise KerasFileError(
                f"{path}: layer '{layer_name}' lists weights {missing} that are not stored"
            )
        if names:
            weights[layer_name] = [np.asarray(layer_group[name]) for name in names]
    return weights


def _name_list(group: h5py.Group, attribute: str, path: Path) -> list[str]:
    # Keras splits long name lists over the attributes name0, name1, ... (HDF5 header limit).
    if attribute in group.attrs:
        values = list(group.attrs[attribute])
    else:
        values = []
        chunk = 0
        while f"{attribute}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{attribute}{chunk}"])
            chunk += 1
        if chunk == 0:
            raise KerasFileError(
                f"{path}: HDF5 group '{group.name}' has no '{attribute}' attribute, so it is not "
                "a Keras weights group"
            )
    return [_text(value) for value in values]


def _keras3_weights(
    file: h5py.File, config: dict[str, Any], label: str
) -> dict[str, list[np.ndarray]]:
    # Keras 3 stores a functional model's layers under layers/<class name in snake_case>, with
    # _1, _2, ... for repeats, in the order of model.layers (the config's layer list), and
    # each layer's variables as vars/0, vars/1, ... in get_weights() order.
    if "layers" not in file:
        raise KerasFileError(f"{label} has no 'layers' group: it is not a Keras 3 weights file")
    stored = file["layers"]
    weights = {}
    used: dict[str, int] = {}
    for layer in _config_layers(config, label):
        group_name = _unique_name(_snake_case(str(layer.get("class_name", ""))), used)
        # A layer without a group is left out here, so that the architecture check reports
        # an unsupported layer by name before the missing weights are reported.
        if group_name not in stored:
            continue
        variables = stored[group_name].get("vars")
        count = len(variables) if variables is not None else 0
        arrays = [np.asarray(variables[str(index)]) for index in range(count)]
        if arrays:
            weights[_layer_name(layer)] = arrays
    return weights


def _config_layers(config: dict[str, Any], label: str) -> list[dict[str, Any]]:
    layers = config.get("config", {}).get("layers") if isinstance(config, dict) else None
    if not isinstance(layers, list):
        raise KerasFileError(
            f"the model config for {label} has no layer list: only functional models are supported"
        )
    return layers


def _layer_name(layer: dict[str, Any]) -> str:
    return str(layer.get("name") or layer.get("config", {}).get("name"))


def _snake_case(class_name: str) -> str:
    # The rule Keras 3 (keras.src.utils.naming.to_snake_case) applies to class names.
    name = re.sub(r"\W+", "", class_name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def _unique_name(name: str, used: dict[str, int]) -> str:
    if name in used:
        used[name] += 1
        return f"{name}_{used[name]}"
    used[name] = 0
    return name


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)
