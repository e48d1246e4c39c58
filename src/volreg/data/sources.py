"""Assembly of the splits of each source, checked against each other, before any data is read."""

from dataclasses import dataclass
from pathlib import Path

from volreg.data import grf
from volreg.data.checks import check_input_dtype, check_lengths, check_targets
from volreg.data.config import FilesConfig, GrfConfig
from volreg.data.errors import DataError
from volreg.data.files import ArrayReader, MemoryArray, open_array
from volreg.data.layout import NO_CHANNEL_AXIS, resolve_layout
from volreg.data.splits import SplitArrays, split_rows


@dataclass(frozen=True)
class DataDescription:
    """Input channels, volume shape and targets that size a network, and the split sizes."""

    in_channels: int
    volume_shape: tuple[int, int, int]  # (D, H, W)
    num_targets: int
    target_names: tuple[str, ...]
    split_sizes: dict[str, int]


# ----------------------------------------------------------------------------- grf


def grf_settings(config: GrfConfig) -> grf.GrfSettings:
    grf.check_settings(
        config.shape,
        (config.n_train, config.n_val, config.n_test),
        config.targets,
        config.amplitude_range,
        config.spectral_index_range,
    )
    return grf.GrfSettings(
        shape=tuple(int(size) for size in config.shape),
        sizes=(int(config.n_train), int(config.n_val), int(config.n_test)),
        amplitude_range=tuple(float(bound) for bound in config.amplitude_range),
        spectral_index_range=tuple(float(bound) for bound in config.spectral_index_range),
        seed=int(config.seed),
    )


def describe_grf(config: GrfConfig) -> DataDescription:
    """Describe the GRF data from its settings alone, without generating it."""
    settings = grf_settings(config)
    return DataDescription(
        in_channels=1,
        volume_shape=settings.shape,
        num_targets=len(config.targets),
        target_names=tuple(config.targets),
        split_sizes={
            split: size for split, size in zip(grf.SPLITS, settings.sizes, strict=True) if size
        },
    )


def prepare_grf(config: GrfConfig, cache_dir: Path) -> None:
    """Generate and cache the GRF splits if no cache of these settings exists yet."""
    grf.ensure_cached(grf_settings(config), cache_dir)


def grf_splits(config: GrfConfig, cache_dir: Path) -> dict[str, SplitArrays]:
    """Generate (or read from the cache) the GRF splits, with the configured targets."""
    settings = grf_settings(config)
    ranges = {
        "amplitude": settings.amplitude_range,
        "spectral_index": settings.spectral_index_range,
    }
    origin = f"GRF cache {grf.cache_path(settings, cache_dir)}"

    splits = {}
    for split, data in grf.load_or_generate(settings, cache_dir).items():
        targets = grf.to_targets(data.parameters, config.targets, ranges)
        splits[split] = SplitArrays(
            x=MemoryArray(f"x_{split}", data.volumes, origin),
            y=MemoryArray(f"y_{split}", targets, origin),
            layout=NO_CHANNEL_AXIS,
        )
    return splits


# ----------------------------------------------------------------------------- files


def file_splits(config: FilesConfig, seed: int) -> dict[str, SplitArrays]:
    """Open the configured arrays (headers only) and check them; returns the splits."""
    if config.split_fractions is None:
        splits = _separate_splits(config)
    else:
        splits = _fraction_splits(config, seed)

    _check_consistent(splits)
    return splits


def describe_files(splits: dict[str, SplitArrays]) -> DataDescription:
    train = splits["train"]
    return DataDescription(
        in_channels=train.in_channels,
        volume_shape=train.volume_shape,
        num_targets=train.num_targets,
        target_names=tuple(f"target_{i}" for i in range(train.num_targets)),
        split_sizes={split: len(arrays) for split, arrays in splits.items()},
    )


def _separate_splits(config: FilesConfig) -> dict[str, SplitArrays]:
    for name in ("x", "y"):
        if getattr(config.paths, name) is not None:
            raise DataError(
                f"data.files.paths.{name} is read only with data.files.split_fractions: set the "
                f"fractions to split it, or give paths.x_train, paths.x_val, ... instead"
            )

    splits = {}
    for split in ("train", "val", "test"):
        if split == "test" and not _has_test_arrays(config):
            continue
        x = _open(config, f"x_{split}")
        y = _open(config, f"y_{split}")
        splits[split] = _checked_split(x, y, config.layout)
    return splits


def _has_test_arrays(config: FilesConfig) -> bool:
    """Return True when a test set is configured: an x_test file, or a shared file and an
    x_test key."""
    return config.paths.x_test is not None or (
        config.path is not None and config.keys.x_test is not None
    )


def _fraction_splits(config: FilesConfig, seed: int) -> dict[str, SplitArrays]:
    for name in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
        if getattr(config.paths, name) is not None:
            raise DataError(
                f"data.files.paths.{name} is not read when data.files.split_fractions is set: "
                "give the whole data set as paths.x and paths.y (or keys.x and keys.y), or set "
                "split_fractions=null to use separate split arrays"
            )

    x = _open(config, "x")
    y = _open(config, "y")
    whole = _checked_split(x, y, config.layout)
    rows = split_rows(len(whole), config.split_fractions, seed, x.label)
    splits = {}
    for split, rows_of_split in rows.items():
        splits[split] = SplitArrays(x=x, y=y, layout=whole.layout, rows=rows_of_split)
    return splits


def _open(config: FilesConfig, name: str) -> ArrayReader:
    path = getattr(config.paths, name) or config.path
    if path is None:
        raise DataError(
            f"no file for {name}: set data.files.path (one .npz or .h5 file holding every "
            f"array) or data.files.paths.{name}"
        )
    return open_array(name, path, getattr(config.keys, name))


def _checked_split(x: ArrayReader, y: ArrayReader, layout: str) -> SplitArrays:
    check_input_dtype(x)
    resolved = resolve_layout(tuple(x.shape), layout, x.label)
    check_targets(y)
    check_lengths(x, y)
    if len(x) == 0:
        raise DataError(
            f"{x.label} is empty (shape {x.shape}): every configured split needs at least one "
            "sample"
        )
    return SplitArrays(x=x, y=y, layout=resolved)


def _check_consistent(splits: dict[str, SplitArrays]) -> None:
    """Every split must match train's channels, volume shape and number of targets."""
    train = splits["train"]
    for split in splits.values():
        if (split.in_channels, split.volume_shape) != (train.in_channels, train.volume_shape):
            raise DataError(
                f"{split.x.label} has {split.in_channels} channel(s) of volume shape "
                f"{split.volume_shape} (array shape {split.x.shape}) but {train.x.label} has "
                f"{train.in_channels} of {train.volume_shape} (array shape {train.x.shape}): "
                "all splits need the same channels and volume shape"
            )
        if split.num_targets != train.num_targets:
            raise DataError(
                f"{split.y.label} has {split.num_targets} target(s) (shape {split.y.shape}) but "
                f"{train.y.label} has {train.num_targets} (shape {train.y.shape}): all splits "
                "need the same targets"
            )


__all__ = ["DataDescription", "describe_files", "describe_grf", "file_splits", "grf_splits"]
