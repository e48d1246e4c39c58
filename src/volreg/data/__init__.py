"""Data for volreg: Gaussian random fields or the user's arrays, served as 3-D volume batches."""

from volreg.data.config import ArrayKeys, ArrayPaths, DataConfig, FilesConfig, GrfConfig
from volreg.data.datamodule import VolumeDataModule, default_cache_dir
from volreg.data.errors import DataError, DataFileNotFoundError, ModelMismatchError
from volreg.data.sources import DataDescription

__all__ = [
    "ArrayKeys",
    "ArrayPaths",
    "DataConfig",
    "DataDescription",
    "DataError",
    "DataFileNotFoundError",
    "FilesConfig",
    "GrfConfig",
    "ModelMismatchError",
    "VolumeDataModule",
    "default_cache_dir",
]
