"""Train/val/test splits: seeded split fractions, and reading a split's rows as float32."""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from volreg.data.checks import NonFiniteCount
from volreg.data.errors import DataError
from volreg.data.files import ArrayReader
from volreg.data.layout import channels_and_volume, to_channels_first

SPLITS = ("train", "val", "test")

# Rows per chunk when a split is scanned (finiteness, statistics) without being loaded.
SCAN_ROWS = 256


def split_rows(count: int, fractions: Sequence[float], seed: int, label: str) -> dict:
    """Split rows 0..count-1 at random into train, val and (with three fractions) test.

    The val and test sizes are the rounded fractions of ``count`` and train takes the rest.
    Each split's rows are sorted so that a lazily read file is read front to back.
    """
    fractions = [float(fraction) for fraction in fractions]
    if len(fractions) not in (2, 3) or any(f < 0 for f in fractions):
        raise DataError(
            f"invalid data.files.split_fractions={fractions}: give [train, val] or "
            "[train, val, test], each >= 0"
        )
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise DataError(
            f"invalid data.files.split_fractions={fractions}: they sum to {sum(fractions):g}, not 1"
        )

    names = SPLITS[: len(fractions)]
    sizes = [round(fraction * count) for fraction in fractions[1:]]
    sizes.insert(0, count - sum(sizes))
    for name, size in zip(names, sizes, strict=True):
        if size <= 0:
            raise DataError(
                f"data.files.split_fractions={fractions} of the {count} samples in {label} "
                f"leave the {name} split empty (sizes {dict(zip(names, sizes, strict=True))}). "
                "Raise its fraction, or give two fractions when there is no test set."
            )

    order = np.random.Generator(np.random.PCG64(seed)).permutation(count)
    bounds = np.cumsum([0, *sizes])
    return {
        name: np.sort(order[start:stop])
        for name, start, stop in zip(names, bounds[:-1], bounds[1:], strict=True)
    }


@dataclass
class SplitArrays:
    """Inputs and targets of one split as stored, with the rows that belong to it."""

    x: ArrayReader
    y: ArrayReader
    layout: str  # resolved: no_channel_axis, channels_first or channels_last
    rows: np.ndarray | None = None  # sorted rows of x and y; None means all rows

    def __len__(self) -> int:
        return len(self.x) if self.rows is None else len(self.rows)

    @property
    def in_channels(self) -> int:
        return channels_and_volume(self.x.shape, self.layout)[0]

    @property
    def volume_shape(self) -> tuple[int, int, int]:
        return channels_and_volume(self.x.shape, self.layout)[1]

    @property
    def num_targets(self) -> int:
        return 1 if len(self.y.shape) == 1 else self.y.shape[1]

    @property
    def float32_bytes(self) -> int:
        """Memory taken by the split's inputs as float32."""
        return len(self) * int(np.prod(self.x.shape[1:])) * 4

    def stored_rows(self, positions: np.ndarray | slice) -> np.ndarray | slice:
        """Map positions within the split to rows of the stored arrays."""
        return positions if self.rows is None else self.rows[positions]

    def read_raw(self, positions: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """Read inputs and targets as stored; ``positions`` must be sorted."""
        rows = self.stored_rows(positions)
        return self.x.read(rows), self.y.read(rows)

    def read(self, positions: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """Read float32 inputs (n, C, D, H, W) and targets (n, P); ``positions`` sorted."""
        volumes, targets = self.read_raw(positions)
        return to_channels_first(volumes, self.layout), as_target_matrix(targets)

    def chunks(self, rows_per_chunk: int = SCAN_ROWS) -> Iterator[tuple[slice, np.ndarray]]:
        """Yield (positions, stored rows) covering the split in order."""
        for start in range(0, len(self), rows_per_chunk):
            positions = slice(start, min(start + rows_per_chunk, len(self)))
            rows = self.stored_rows(positions)
            if isinstance(rows, slice):
                rows = np.arange(rows.start, rows.stop)
            yield positions, rows

    def check_finite(self) -> None:
        """Raise a DataError naming the count and first index of NaN or inf values."""
        counts = NonFiniteCount(self.x), NonFiniteCount(self.y)
        for positions, rows in self.chunks():
            volumes, targets = self.read_raw(positions)
            counts[0].add(volumes, rows)
            counts[1].add(targets, rows)
        for count in counts:
            count.raise_if_any()


def as_target_matrix(targets: np.ndarray) -> np.ndarray:
    """Return targets as contiguous float32 (n, P); (n,) becomes (n, 1)."""
    if targets.ndim == 1:
        targets = targets[:, None]
    return np.ascontiguousarray(targets, dtype=np.float32)
