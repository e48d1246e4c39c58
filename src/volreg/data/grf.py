"""Gaussian random fields with a power-law spectrum, generated once and cached on disk.

A field is white noise coloured in Fourier space: with ``F`` the unnormalised 3-D FFT of a
periodic D×H×W field of ``V = D·H·W`` voxels, ``E|F(k)|² = V·A·|k|^n`` for every k ≠ 0, where
``|k|`` is measured in units of the fundamental mode 2π/L. The k = 0 mode is zero, so every
field has zero mean, and its variance is ``(1/V)·Σ_{k≠0} A·|k|^n``.
"""

import hashlib
import json
import logging
import os
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from volreg.data.errors import DataError
from volreg.options import check_choice

log = logging.getLogger(__name__)

TARGETS = ("amplitude", "spectral_index")
SPLITS = ("train", "val", "test")

# Bumped whenever the generated arrays change for the same settings, so old caches are not reused.
FORMAT_VERSION = 1

# Voxels per FFT chunk (about 16 MB of float64 noise). The chunking only bounds memory: numpy
# draws normals one after another, so the random stream does not depend on where chunks end.
CHUNK_VOXELS = 1 << 21


@dataclass(frozen=True)
class GrfSettings:
    """Every setting that changes the generated arrays, and so the cache key."""

    shape: tuple[int, int, int]
    sizes: tuple[int, int, int]  # volumes in train, val, test
    amplitude_range: tuple[float, float]
    spectral_index_range: tuple[float, float]
    seed: int

    def cache_key(self) -> str:
        """Return a hex digest of the settings and the generator version."""
        record = {"format_version": FORMAT_VERSION, **asdict(self)}
        text = json.dumps(record, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class GrfSplit:
    """Generated volumes (N, D, H, W) float32 and their parameters (N, 2): amplitude, index."""

    volumes: np.ndarray
    parameters: np.ndarray


def wavenumber_magnitude(shape: Sequence[int]) -> np.ndarray:
    """Return |k| in units of the fundamental mode on the rfftn grid of ``shape``."""
    depth, height, width = shape
    kz = np.fft.fftfreq(depth, 1.0 / depth)
    ky = np.fft.fftfreq(height, 1.0 / height)
    kx = np.fft.rfftfreq(width, 1.0 / width)
    return np.sqrt(kz[:, None, None] ** 2 + ky[None, :, None] ** 2 + kx[None, None, :] ** 2)


def generate_fields(
    amplitude: np.ndarray,
    spectral_index: np.ndarray,
    shape: Sequence[int],
    rng: np.random.Generator,
) -> np.ndarray:
    """Generate one field per (amplitude, spectral_index) pair; returns float32 (N, D, H, W).

    The arithmetic runs in float64 and is cast to float32 at the end.
    """
    shape = tuple(int(size) for size in shape)
    count = len(amplitude)
    wavenumber = wavenumber_magnitude(shape)
    log_k = np.log(np.where(wavenumber > 0, wavenumber, 1.0))  # k = 0 is zeroed below
    chunk = max(1, CHUNK_VOXELS // int(np.prod(shape)))
    volumes = np.empty((count, *shape), dtype=np.float32)

    for start in range(0, count, chunk):
        stop = min(start + chunk, count)
        noise = rng.standard_normal((stop - start, *shape))
        modes = np.fft.rfftn(noise, axes=(1, 2, 3))

        # sqrt(A·k^n) = sqrt(A)·exp(n·log(k)/2), broadcast over (chunk, D, H, W//2 + 1)
        scale = np.sqrt(amplitude[start:stop, None, None, None]) * np.exp(
            0.5 * spectral_index[start:stop, None, None, None] * log_k
        )
        scale[:, 0, 0, 0] = 0.0
        modes *= scale
        volumes[start:stop] = np.fft.irfftn(modes, s=shape, axes=(1, 2, 3))

    return volumes


def generate_split(settings: GrfSettings, split: str) -> GrfSplit:
    """Generate one split. Each split has its own random streams, seeded by (seed, split)."""
    count = settings.sizes[SPLITS.index(split)]
    sequence = np.random.SeedSequence(settings.seed, spawn_key=(SPLITS.index(split),))
    parameter_seed, noise_seed = sequence.spawn(2)
    parameter_rng = np.random.Generator(np.random.PCG64(parameter_seed))
    noise_rng = np.random.Generator(np.random.PCG64(noise_seed))

    amplitude = parameter_rng.uniform(*settings.amplitude_range, size=count)
    spectral_index = parameter_rng.uniform(*settings.spectral_index_range, size=count)
    volumes = generate_fields(amplitude, spectral_index, settings.shape, noise_rng)
    return GrfSplit(volumes, np.stack([amplitude, spectral_index], axis=1))


def to_targets(
    parameters: np.ndarray, targets: Sequence[str], ranges: dict[str, tuple[float, float]]
) -> np.ndarray:
    """Map the chosen parameters linearly from their ranges to [0, 1]; returns float32 (N, P)."""
    columns = []
    for name in targets:
        low, high = ranges[name]
        values = parameters[:, TARGETS.index(name)]
        columns.append((values - low) / (high - low))
    return np.stack(columns, axis=1).astype(np.float32)


def cache_path(settings: GrfSettings, cache_dir: Path) -> Path:
    """Return the cache file of the splits that ``settings`` describe."""
    return cache_dir / f"grf-{settings.cache_key()}.npz"


def ensure_cached(settings: GrfSettings, cache_dir: Path) -> None:
    """Generate and cache the splits unless their cache file exists.

    Lightning calls ``prepare_data`` before every stage, so this does not read an existing
    cache. An unreadable one is replaced when ``load_or_generate`` reads it.
    """
    if not cache_path(settings, cache_dir).is_file():
        load_or_generate(settings, cache_dir)


def load_or_generate(settings: GrfSettings, cache_dir: Path) -> dict[str, GrfSplit]:
    """Return every non-empty split, read from the cache or generated and written to it."""
    path = cache_path(settings, cache_dir)
    names = [split for split, size in zip(SPLITS, settings.sizes, strict=True) if size > 0]

    cached = _read_cache(path, names)
    if cached is not None:
        log.info("GRF cache hit: %s", path)
        return cached

    started = time.perf_counter()
    splits = {split: generate_split(settings, split) for split in names}
    total = sum(len(split.volumes) for split in splits.values())
    log.info(
        "Generated %d GRF volumes of shape %s in %.2f s",
        total,
        settings.shape,
        time.perf_counter() - started,
    )
    _write_cache(path, splits)
    return splits


def _read_cache(path: Path, names: list[str]) -> dict[str, GrfSplit] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as archive:
            return {
                split: GrfSplit(archive[f"volumes_{split}"], archive[f"parameters_{split}"])
                for split in names
            }
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        log.warning("Ignoring unreadable GRF cache %s (%s); generating again", path, error)
        return None


def _write_cache(path: Path, splits: dict[str, GrfSplit]) -> None:
    """Write the cache atomically: a temporary file in the same folder, then a rename.

    A cache that cannot be written costs only regeneration next time, so the failure is logged
    and not raised.
    """
    arrays = {}
    for split, data in splits.items():
        arrays[f"volumes_{split}"] = data.volumes
        arrays[f"parameters_{split}"] = data.parameters

    temporary = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(
            dir=path.parent, prefix=path.stem, suffix=".tmp", delete=False
        ) as handle:
            temporary = Path(handle.name)
            np.savez(handle, **arrays)
        os.replace(temporary, path)
    except OSError as error:
        log.warning("Could not write GRF cache %s: %s", path, error)
        if temporary is not None:
            temporary.unlink(missing_ok=True)
        return
    log.info("Wrote GRF cache %s", path)


def check_settings(
    shape: Sequence[int],
    sizes: Sequence[int],
    targets: Sequence[str],
    amplitude_range: Sequence[float],
    spectral_index_range: Sequence[float],
) -> None:
    """Raise DataError for GRF settings that cannot produce a usable data set."""
    if len(shape) != 3 or any(int(size) < 1 for size in shape):
        raise DataError(
            f"invalid data.grf.shape={list(shape)}: give three positive sizes [D, H, W]"
        )
    for split, size in zip(SPLITS, sizes, strict=True):
        if int(size) < 0 or (split != "test" and int(size) == 0):
            raise DataError(
                f"invalid data.grf.n_{split}={size}: the {split} split needs at least one "
                "volume (only n_test may be 0, meaning no test set)"
            )
    for name in targets:
        check_choice("data.grf.targets", name, TARGETS)
    if len(targets) == 0 or len(set(targets)) != len(targets):
        raise DataError(
            f"invalid data.grf.targets={list(targets)}: give one or both of {list(TARGETS)}, "
            "each once"
        )
    for name, bounds in zip(TARGETS, (amplitude_range, spectral_index_range), strict=True):
        if len(bounds) != 2 or not bounds[0] <= bounds[1]:
            raise DataError(
                f"invalid data.grf.{name}_range={list(bounds)}: give [low, high] with low <= high"
            )
        # A parameter that is not a target may be fixed, but a target is mapped to [0, 1].
        if name in targets and bounds[0] == bounds[1]:
            raise DataError(
                f"invalid data.grf.{name}_range={list(bounds)} for the target {name!r}: give "
                "low < high, because targets are mapped from this range to [0, 1]"
            )
    if amplitude_range[0] < 0:
        raise DataError(
            f"invalid data.grf.amplitude_range={list(amplitude_range)}: a power spectrum "
            "amplitude must be >= 0"
        )
