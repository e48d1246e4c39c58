"""Typed Hydra schema of the ``data`` config group.

Each field maps one to one onto a keyword argument of :class:`volreg.data.VolumeDataModule`, so a
misspelt key in a yaml file or an override fails when Hydra composes the config.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from volreg.data.errors import DataError


@dataclass
class ArrayKeys:
    """Key of each array inside .npz/.h5 files; defaults are the names a Keras script uses."""

    x_train: str | None = "Xtr"
    y_train: str | None = "Ytr"
    x_val: str | None = "Xval"
    y_val: str | None = "Yval"
    x_test: str | None = "Xte"
    y_test: str | None = "Yte"
    # Used only with `split_fractions`: the whole data set, split at random.
    x: str | None = "X"
    y: str | None = "Y"


@dataclass
class ArrayPaths:
    """File of each array; null falls back to `files.path`."""

    x_train: str | None = None
    y_train: str | None = None
    x_val: str | None = None
    y_val: str | None = None
    x_test: str | None = None
    y_test: str | None = None
    x: str | None = None
    y: str | None = None


@dataclass
class GrfConfig:
    """Gaussian random fields with power spectrum P(k) = A·k^n, generated and cached."""

    shape: list[int] = field(default_factory=lambda: [16, 16, 16])
    n_train: int = 4000
    n_val: int = 500
    n_test: int = 500
    # Targets served, in this order, each mapped linearly from its range to [0, 1].
    targets: list[str] = field(default_factory=lambda: ["spectral_index"])
    amplitude_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    spectral_index_range: list[float] = field(default_factory=lambda: [-3.0, -1.0])
    # Fixes the generated volumes; the top-level `seed` fixes shuffling and split fractions.
    seed: int = 0


@dataclass
class FilesConfig:
    """The user's arrays in .npy, .npz or HDF5 files."""

    # One .npz or .h5/.hdf5 file holding every array named in `keys`.
    path: str | None = None
    # Per-array files (.npy, or .npz/.h5 read with the array's key); each overrides `path`.
    paths: ArrayPaths = field(default_factory=ArrayPaths)
    # Key inside .npz/.h5 files (an HDF5 dataset path may contain '/').
    # x_test: null and y_test: null mean there is no test set.
    keys: ArrayKeys = field(default_factory=ArrayKeys)
    # null: the splits are separate arrays (x_train, x_val, ...). [train, val] or
    # [train, val, test]: arrays `x` and `y` are split at random, seeded by the top-level `seed`.
    split_fractions: list[float] | None = None
    # auto | channels_first | channels_last; applies to 5-D inputs, 4-D inputs have no channel axis.
    layout: str = "auto"
    # auto | memory | lazy. `auto` loads a split when its float32 inputs fit `memory_limit_gb`.
    loading: str = "auto"
    memory_limit_gb: float = 2.0


@dataclass
class DataConfig:
    """Settings of :class:`volreg.data.VolumeDataModule`."""

    _target_: str = "volreg.data.VolumeDataModule"
    source: str = "grf"  # grf | files
    grf: GrfConfig = field(default_factory=GrfConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    batch_size: int = 16
    val_batch_size: int = 16
    test_batch_size: int = 16
    predict_batch_size: int = 16
    # Split served by predict_dataloader: train | val | test.
    predict_split: str = "test"
    shuffle: bool = True
    standardize: str = "none"  # none | inputs | targets | both
    on_device: bool = False
    num_workers: int = 0
    pin_memory: bool = False
    seed: int = 0
    # The default path is quoted because OmegaConf's grammar rejects an unquoted '~'.
    cache_dir: str = "${oc.env:VOLREG_CACHE,'~/.cache/volreg'}"


def settings_from(cls: type, value: Any, prefix: str) -> Any:
    """Build the dataclass ``cls`` from a dict or DictConfig, rejecting keys it does not have.

    ``None`` gives the defaults. Nested dataclass fields are built the same way, so a misspelt
    key fails with the list of valid keys also when the module is built without Hydra.
    """
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, DictConfig):
        value = OmegaConf.to_container(value, resolve=True)
    if not isinstance(value, Mapping):
        raise DataError(f"invalid {prefix}={value!r}: expected a mapping of {cls.__name__} keys")

    known = {item.name: item for item in fields(cls)}
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise DataError(f"unknown key(s) {unknown} in {prefix}: valid keys are {sorted(known)}")

    arguments = {}
    for name, item in value.items():
        field_type = known[name].type
        if is_dataclass(field_type):
            item = settings_from(field_type, item, f"{prefix}.{name}")
        elif isinstance(item, ListConfig):
            item = OmegaConf.to_container(item, resolve=True)
        arguments[name] = item
    return cls(**arguments)
