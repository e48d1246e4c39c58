"""Read-only access to arrays in .npy, .npz and HDF5 files, whole or by rows.

.npy files are memory-mapped and HDF5 datasets are read lazily, so a reader costs no memory until
rows are read. .npz members cannot be memory-mapped in general (they may be compressed), so an
.npz array is read whole on first use.
"""

import os
import zipfile
from pathlib import Path

import h5py
import numpy as np

from volreg.data.errors import DataError, DataFileNotFoundError

NPY_SUFFIXES = (".npy",)
NPZ_SUFFIXES = (".npz",)
HDF5_SUFFIXES = (".h5", ".hdf5")

Rows = np.ndarray | slice


class ArrayReader:
    """One named array (``x_train``, ``y_val``, ...) and where it comes from, for messages."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def origin(self) -> str:
        """Where the array comes from, e.g. ``data.npz, key 'Xtr'``."""
        raise NotImplementedError

    @property
    def label(self) -> str:
        return f"{self.name} ({self.origin})"

    def read(self, rows: Rows) -> np.ndarray:
        """Return the given rows; an index array must be sorted ascending without repeats."""
        raise NotImplementedError

    def __len__(self) -> int:
        return self.shape[0]


class MemoryArray(ArrayReader):
    """An array already in memory, such as generated volumes."""

    def __init__(self, name: str, array: np.ndarray, origin: str) -> None:
        self.name = name
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self._origin = origin

    @property
    def origin(self) -> str:
        return self._origin

    def read(self, rows: Rows) -> np.ndarray:
        return self.array[rows]


class NpyArray(ArrayReader):
    """A .npy file, memory-mapped read-only and mapped again in each worker process."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        array = self._map()
        self.shape = array.shape
        self.dtype = array.dtype
        self._array: np.ndarray | None = None

    @property
    def origin(self) -> str:
        return str(self.path)

    def _map(self) -> np.ndarray:
        try:
            return np.load(self.path, mmap_mode="r", allow_pickle=False)
        except ValueError as error:
            raise DataError(
                f"could not read {self.name} from {self.path}: {error}. "
                "Save it with numpy.save as a numeric array."
            ) from error

    def read(self, rows: Rows) -> np.ndarray:
        if self._array is None:
            self._array = self._map()
        return np.asarray(self._array[rows])

    def __getstate__(self) -> dict:
        # A worker maps the file itself instead of receiving a pickled copy of its contents.
        return {**self.__dict__, "_array": None}


class NpzArray(ArrayReader):
    """One member of an .npz archive; its header is read at once and its data on first use."""

    def __init__(self, name: str, path: Path, key: str) -> None:
        self.name = name
        self.path = path
        self.key = key
        self.shape, self.dtype = _npz_member_header(path, key, name)
        self._array: np.ndarray | None = None

    @property
    def origin(self) -> str:
        return f"{self.path}, key {self.key!r}"

    def read(self, rows: Rows) -> np.ndarray:
        if self._array is None:
            with np.load(self.path, allow_pickle=False) as archive:
                self._array = archive[self.key]
        return self._array[rows]


class Hdf5Array(ArrayReader):
    """One HDF5 dataset, opened read-only on first read in each process.

    An h5py file handle must not be shared across a fork, so the handle is dropped when the
    reader is pickled for a DataLoader worker and reopened under the worker's own process id.
    """

    def __init__(self, name: str, path: Path, key: str) -> None:
        self.name = name
        self.path = path
        self.key = key
        with _open_hdf5(path, name) as file:
            dataset = file.get(key)
            if not isinstance(dataset, h5py.Dataset):
                available = ", ".join(repr(name) for name in _hdf5_datasets(file)) or "none"
                raise DataError(
                    f"dataset {key!r} for {name} not found in {path}; its datasets are: "
                    f"{available}. Set data.files.keys.{name} to one of them{_no_split_hint(name)}."
                )
            self.shape = dataset.shape
            self.dtype = dataset.dtype
        self._file: h5py.File | None = None
        self._pid: int | None = None

    @property
    def origin(self) -> str:
        return f"{self.path}, dataset {self.key!r}"

    def read(self, rows: Rows) -> np.ndarray:
        if self._file is None or self._pid != os.getpid():
            self._file = _open_hdf5(self.path, self.name)
            self._pid = os.getpid()
        dataset = self._file[self.key]
        if isinstance(rows, np.ndarray) and len(rows) > 0 and rows[-1] - rows[0] + 1 == len(rows):
            rows = slice(int(rows[0]), int(rows[-1]) + 1)  # contiguous rows read as one hyperslab
        return dataset[rows]

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_file": None, "_pid": None}


def open_array(name: str, path: str | os.PathLike, key: str | None) -> ArrayReader:
    """Open the array ``name`` stored in ``path`` (under ``key`` for .npz and HDF5 files)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DataFileNotFoundError(
            f"{name} file not found: {path.absolute()}. Check data.files.paths.{name} "
            "or data.files.path."
        )

    suffix = path.suffix.lower()
    if suffix in NPY_SUFFIXES:
        return NpyArray(name, path)
    if key is None:
        raise DataError(
            f"no key for {name} in {path}: set data.files.keys.{name} to the array's name "
            "inside the file"
        )
    if suffix in NPZ_SUFFIXES:
        return NpzArray(name, path, key)
    if suffix in HDF5_SUFFIXES:
        return Hdf5Array(name, path, key)

    known = ", ".join(NPY_SUFFIXES + NPZ_SUFFIXES + HDF5_SUFFIXES)
    raise DataError(f"unsupported file type {suffix!r} for {name}: {path}. Use one of {known}.")


def _open_hdf5(path: Path, name: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise DataError(f"could not open {path} for {name} as HDF5: {error}") from error


def _hdf5_datasets(file: h5py.File) -> list[str]:
    found: list[str] = []

    def collect(path: str, item: h5py.HLObject) -> None:
        if isinstance(item, h5py.Dataset):
            found.append(path)

    file.visititems(collect)
    return found


def _no_split_hint(name: str) -> str:
    if name in ("x_test", "y_test"):
        return (
            ", or set data.files.keys.x_test=null and data.files.keys.y_test=null "
            "when there is no test set"
        )
    return ""


def _npz_member_header(path: Path, key: str, name: str) -> tuple[tuple[int, ...], np.dtype]:
    """Read shape and dtype of ``key`` from the .npy header inside the archive, not its data."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [member.removesuffix(".npy") for member in archive.namelist()]
            if key not in members:
                available = ", ".join(repr(member) for member in members) or "none"
                raise DataError(
                    f"key {key!r} for {name} not found in {path}; its keys are: {available}. "
                    f"Set data.files.keys.{name} to one of them{_no_split_hint(name)}."
                )
            with archive.open(f"{key}.npy") as member:
                version = np.lib.format.read_magic(member)
                if version == (1, 0):
                    shape, _, dtype = np.lib.format.read_array_header_1_0(member)
                elif version == (2, 0):
                    shape, _, dtype = np.lib.format.read_array_header_2_0(member)
                else:
                    # Format 3.0 (UTF-8 field names) has no public header reader: load it.
                    with np.load(path, allow_pickle=False) as loaded:
                        array = loaded[key]
                    shape, dtype = array.shape, array.dtype
    except DataError:
        raise
    except (zipfile.BadZipFile, ValueError) as error:
        raise DataError(f"could not read {path} for {name} as .npz: {error}") from error
    return shape, dtype
