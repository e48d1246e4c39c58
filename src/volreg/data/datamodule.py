"""LightningDataModule serving (x, y) batches of 3-D volumes from GRFs or the user's files."""

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from volreg.data import sources
from volreg.data.batches import LazyBatches, TensorBatches, batch_loader
from volreg.data.config import FilesConfig, GrfConfig, settings_from
from volreg.data.errors import DataError, ModelMismatchError
from volreg.data.files import NpzArray
from volreg.data.layout import LAYOUTS
from volreg.data.splits import SplitArrays
from volreg.data.standardize import STANDARDIZE, Scaler
from volreg.options import check_choice

log = logging.getLogger(__name__)

SOURCES = ("grf", "files")
LOADING = ("auto", "memory", "lazy")
SPLITS = ("train", "val", "test")


def default_cache_dir() -> Path:
    """Return the GRF cache folder: ``$VOLREG_CACHE`` if set, else ``~/.cache/volreg``."""
    return Path(os.environ.get("VOLREG_CACHE", "~/.cache/volreg")).expanduser()


class VolumeDataModule(L.LightningDataModule):
    """Data module serving x float32 (N, C, D, H, W), y float32 (N, P) for every stage.

    ``describe()``, and the properties ``in_channels``, ``volume_shape``, ``num_targets`` and
    ``target_names`` built on it, work before ``setup``: they read file headers only and do not
    generate GRFs. Data is read, checked for NaN/inf and standardised in ``setup``.

    Args:
        source: ``grf`` (generated Gaussian random fields) or ``files`` (the user's arrays).
        grf: settings of :class:`volreg.data.config.GrfConfig`, as a mapping.
        files: settings of :class:`volreg.data.config.FilesConfig`, as a mapping.
        batch_size, val_batch_size, test_batch_size, predict_batch_size: samples per batch.
        predict_split: split served by ``predict_dataloader``.
        shuffle: draw a new training order each epoch from (seed, epoch), as Keras ``fit``
            does; ``False`` serves the training split in stored order.
        standardize: ``none``, ``inputs``, ``targets`` or ``both``, with training-split
            statistics (inputs per channel, targets per column).
        on_device: keep in-memory data on the trainer's device, so batches skip the copy.
        num_workers, pin_memory: passed to every DataLoader.
        seed: seeds the training order and ``files.split_fractions``.
        cache_dir: folder of the GRF cache; ``None`` means ``default_cache_dir()``.
    """

    def __init__(
        self,
        source: str = "grf",
        grf: Mapping[str, Any] | None = None,
        files: Mapping[str, Any] | None = None,
        batch_size: int = 16,
        val_batch_size: int = 16,
        test_batch_size: int = 16,
        predict_batch_size: int = 16,
        predict_split: str = "test",
        shuffle: bool = True,
        standardize: str = "none",
        on_device: bool = False,
        num_workers: int = 0,
        pin_memory: bool = False,
        seed: int = 0,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__()
        self.source = check_choice("data.source", source, SOURCES)
        self.grf = settings_from(GrfConfig, grf, "data.grf")
        self.files = settings_from(FilesConfig, files, "data.files")
        check_choice("data.files.layout", self.files.layout, LAYOUTS)
        check_choice("data.files.loading", self.files.loading, LOADING)
        self.batch_sizes = {
            "train": _positive("data.batch_size", batch_size),
            "val": _positive("data.val_batch_size", val_batch_size),
            "test": _positive("data.test_batch_size", test_batch_size),
            "predict": _positive("data.predict_batch_size", predict_batch_size),
        }
        self.predict_split = check_choice("data.predict_split", predict_split, SPLITS)
        self.shuffle = bool(shuffle)
        self.standardize = check_choice("data.standardize", standardize, STANDARDIZE)
        self.on_device = bool(on_device)
        self.num_workers = int(num_workers)
        self.pin_memory = bool(pin_memory)
        self.seed = int(seed)
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir else default_cache_dir()
        if self.source == "grf":
            sources.grf_settings(self.grf)  # fail at construction, not at setup
        if self.on_device and (self.num_workers > 0 or self.pin_memory):
            raise DataError(
                "data.on_device=true keeps batches on the device already, so it cannot be "
                f"combined with num_workers={self.num_workers} or pin_memory={self.pin_memory}: "
                "set num_workers=0 and pin_memory=false, or on_device=false"
            )

        self._file_splits: dict[str, SplitArrays] | None = None
        self._description: sources.DataDescription | None = None
        self._datasets: dict[str, Dataset] = {}
        self.input_scaler = Scaler(1)
        self.target_scaler = Scaler(1)

    # ------------------------------------------------------------------ what the net needs

    def describe(self) -> sources.DataDescription:
        """Return channels, volume shape, targets and split sizes from settings and headers."""
        if self._description is None:
            if self.source == "grf":
                self._description = sources.describe_grf(self.grf)
            else:
                self._description = sources.describe_files(self._opened_files())
        return self._description

    @property
    def in_channels(self) -> int:
        return self.describe().in_channels

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return self.describe().volume_shape

    @property
    def num_targets(self) -> int:
        return self.describe().num_targets

    @property
    def target_names(self) -> tuple[str, ...]:
        return self.describe().target_names

    def check_model_fit(
        self, in_channels: int, volume_shape: tuple[int, int, int], num_targets: int
    ) -> None:
        """Raise ModelMismatchError when a model built for these shapes cannot take this data."""
        data = self.describe()
        where = self._data_label()
        model_input = (int(in_channels), *(int(size) for size in volume_shape))
        data_input = (data.in_channels, *data.volume_shape)
        if model_input != data_input:
            raise ModelMismatchError(
                f"{where} has volumes of shape (C, D, H, W) = {data_input} but the model takes "
                f"{model_input}: resample or crop the volumes to the model's shape, or train a "
                "model on this data"
            )
        if data.num_targets > num_targets:
            raise ModelMismatchError(
                f"{where} has {data.num_targets} target(s) per sample but the model predicts "
                f"{num_targets}: select the model's targets in the target array, or train a "
                "model with this many outputs"
            )
        if data.num_targets < num_targets:
            raise ModelMismatchError(
                f"{where} has {data.num_targets} target(s) per sample but the model predicts "
                f"{num_targets}: give all {num_targets} targets the model was trained on"
            )

    # ------------------------------------------------------------------ Lightning hooks

    def prepare_data(self) -> None:
        """Generate and cache the GRFs once (Lightning runs this on one process per node)."""
        if self.source == "grf":
            sources.prepare_grf(self.grf, self.cache_dir)

    def setup(self, stage: str | None = None) -> None:
        """Read, check and standardise every split; later calls do nothing."""
        if self._datasets:
            return

        if self.source == "grf":
            splits = sources.grf_splits(self.grf, self.cache_dir)
        else:
            splits = self._opened_files()
        for split in splits.values():
            split.check_finite()

        lazy = self._choose_lazy(splits)
        self._fit_scalers(splits["train"])
        for name, split in splits.items():
            self._datasets[name] = self._lazy(split) if lazy else self._in_memory(split)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", "train", self.shuffle)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", "val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", "test", False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_split, "predict", False)

    # ------------------------------------------------------------------ target units

    @property
    def target_mean(self) -> torch.Tensor:
        """Mean (P,) removed from the served targets; zeros unless targets are standardised."""
        return self.target_scaler.mean

    @property
    def target_std(self) -> torch.Tensor:
        """Scale (P,) the served targets are divided by; ones unless targets are standardised."""
        return self.target_scaler.std

    def inverse_transform_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Map served targets or predictions (N, P) back to the units of the stored targets."""
        return self.target_scaler.inverse_transform(targets)

    # ------------------------------------------------------------------ internals

    def _opened_files(self) -> dict[str, SplitArrays]:
        if self._file_splits is None:
            self._file_splits = sources.file_splits(self.files, self.seed)
        return self._file_splits

    def _data_label(self) -> str:
        if self.source == "grf":
            return f"the GRF data (data.grf.shape={list(self.grf.shape)})"
        train = self._opened_files()["train"]
        return f"{train.x.label} with shape {train.x.shape}"

    def _choose_lazy(self, splits: dict[str, SplitArrays]) -> bool:
        if self.source == "grf":
            return False  # generated arrays are in memory already
        loading = self.files.loading
        total = sum(split.float32_bytes for split in splits.values())
        if loading == "auto":
            loading = "memory" if total <= self.files.memory_limit_gb * 1e9 else "lazy"
            log.info(
                "data.files.loading=auto: %s (inputs take %.2f GB as float32, limit "
                "data.files.memory_limit_gb=%g)",
                loading,
                total / 1e9,
                self.files.memory_limit_gb,
            )

        if loading == "lazy" and self.on_device:
            raise DataError(
                f"data.on_device=true needs the data in memory, but it is read lazily "
                f"(data.files.loading={self.files.loading}, inputs {total / 1e9:.2f} GB as "
                "float32): set data.files.loading=memory or data.on_device=false"
            )
        if loading == "lazy":
            for split in splits.values():
                if isinstance(split.x, NpzArray):
                    log.warning(
                        "%s is an .npz member, which is read whole on first use (in every "
                        "worker): save it as .npy or HDF5 to read it lazily",
                        split.x.label,
                    )
        return loading == "lazy"

    def _fit_scalers(self, train: SplitArrays) -> None:
        self.input_scaler = Scaler(train.in_channels)
        self.target_scaler = Scaler(train.num_targets)
        fit_inputs = self.standardize in ("inputs", "both")
        fit_targets = self.standardize in ("targets", "both")
        if not (fit_inputs or fit_targets):
            return

        for positions, _ in train.chunks():
            volumes, targets = train.read(positions)
            if fit_inputs:
                self.input_scaler.update(volumes)
            if fit_targets:
                self.target_scaler.update(targets)
        if fit_inputs:
            self.input_scaler.finish()
        if fit_targets:
            self.target_scaler.finish()
        log.info(
            "data.standardize=%s: fitted on %d training samples; input mean %s std %s, target "
            "mean %s std %s",
            self.standardize,
            len(train),
            self.input_scaler.mean.tolist(),
            self.input_scaler.std.tolist(),
            self.target_scaler.mean.tolist(),
            self.target_scaler.std.tolist(),
        )

    def _in_memory(self, split: SplitArrays) -> TensorBatches:
        volumes, targets = split.read(slice(None))
        volumes = self.input_scaler.transform(torch.from_numpy(volumes))
        targets = self.target_scaler.transform(torch.from_numpy(targets))
        if self.on_device:
            device = self._device()
            volumes, targets = volumes.to(device), targets.to(device)
        return TensorBatches(volumes, targets)

    def _lazy(self, split: SplitArrays) -> LazyBatches:
        return LazyBatches(split, self.input_scaler, self.target_scaler)

    def _device(self) -> torch.device:
        if self.trainer is not None:
            return self.trainer.strategy.root_device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")

    def _loader(self, split: str, role: str, shuffle: bool) -> DataLoader:
        if not self._datasets:
            raise RuntimeError("call setup() before asking VolumeDataModule for a dataloader")
        if split not in self._datasets:
            fix = (
                "set data.grf.n_test > 0"
                if self.source == "grf"
                else "configure x_test and y_test in data.files"
            )
            if role == "predict":
                fix += " or choose another data.predict_split"
            raise DataError(f"there is no {split} split to serve for {role}: {fix}")
        return batch_loader(
            self._datasets[split],
            self.batch_sizes[role],
            shuffle,
            self.seed,
            self.num_workers,
            self.pin_memory,
        )


def _positive(name: str, value: int) -> int:
    if int(value) < 1:
        raise DataError(f"invalid {name}={value}: a batch needs at least one sample")
    return int(value)
