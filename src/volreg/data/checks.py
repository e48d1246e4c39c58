"""Checks of input and target arrays, each raising a DataError that names the array and the fix."""

import numpy as np

from volreg.data.errors import DataError
from volreg.data.files import ArrayReader


def check_input_dtype(reader: ArrayReader) -> None:
    """Reject inputs that are not floating point.

    Integer or boolean volumes are usually labels, masks or unscaled images saved under the
    wrong key, and a float32 network cannot take them as they are.
    """
    if not np.issubdtype(reader.dtype, np.floating):
        raise DataError(
            f"{reader.label} has dtype {reader.dtype} and shape {reader.shape}: expected "
            "floating-point volumes. Convert the array to float32 (scaled as the model expects) "
            "or check that the key names the input volumes."
        )


def check_targets(reader: ArrayReader) -> int:
    """Check a target array's rank and dtype; returns the number of targets P."""
    if len(reader.shape) not in (1, 2):
        raise DataError(
            f"{reader.label} has shape {reader.shape} (rank {len(reader.shape)}): expected "
            "targets of shape (N,) or (N, P)"
        )
    if not (np.issubdtype(reader.dtype, np.floating) or np.issubdtype(reader.dtype, np.integer)):
        raise DataError(
            f"{reader.label} has dtype {reader.dtype}: expected numeric targets "
            "(floating point or integer)"
        )
    return 1 if len(reader.shape) == 1 else reader.shape[1]


def check_lengths(x: ArrayReader, y: ArrayReader) -> None:
    if len(x) != len(y):
        raise DataError(
            f"{x.label} has {len(x)} samples (shape {x.shape}) but {y.label} has {len(y)} "
            f"(shape {y.shape}): inputs and targets need one row per sample"
        )


class NonFiniteCount:
    """Running count of NaN and infinite values over chunks of one array, and the first one."""

    def __init__(self, reader: ArrayReader) -> None:
        self.reader = reader
        self.count = 0
        self.first: tuple[int, ...] | None = None

    def add(self, chunk: np.ndarray, rows: np.ndarray) -> None:
        """Count the chunk whose i-th row is row ``rows[i]`` of the stored array."""
        bad = ~np.isfinite(chunk)
        found = int(np.count_nonzero(bad))
        if found == 0:
            return
        if self.first is None:
            position = np.unravel_index(int(np.argmax(bad)), chunk.shape)
            self.first = (int(rows[position[0]]), *(int(i) for i in position[1:]))
        self.count += found

    def raise_if_any(self) -> None:
        if self.count:
            values = "value" if self.count == 1 else "values"
            raise DataError(
                f"{self.reader.label} with shape {self.reader.shape} contains {self.count} "
                f"non-finite {values} (NaN or inf); the first is at index {self.first} "
                f"(sample {self.first[0]}). Remove or repair those samples."
            )
