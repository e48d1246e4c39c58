"""Small real data sets in .npy, .npz and HDF5 files, as the data tests write them."""

import h5py
import numpy as np

SHAPE = (8, 8, 8)
SIZES = {"train": 20, "val": 6, "test": 5}
KERAS_KEYS = {"train": ("Xtr", "Ytr"), "val": ("Xval", "Yval"), "test": ("Xte", "Yte")}


def make_arrays(seed: int = 0, targets: int = 2) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return float64 (N, D, H, W) inputs and (N, P) targets per split, as a Keras script has."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in SIZES.items():
        volumes = rng.normal(size=(count, *SHAPE))
        values = rng.uniform(size=(count, targets))
        arrays[split] = volumes, values
    return arrays


def write_npz(path, arrays) -> None:
    np.savez(
        path,
        **{
            key: array
            for split, (x_key, y_key) in KERAS_KEYS.items()
            for key, array in zip((x_key, y_key), arrays[split], strict=True)
        },
    )


def write_h5(path, arrays, group: str = "") -> None:
    with h5py.File(path, "w") as file:
        for split, (x_key, y_key) in KERAS_KEYS.items():
            file[f"{group}{x_key}"] = arrays[split][0]
            file[f"{group}{y_key}"] = arrays[split][1]


def write_npy(folder, arrays) -> dict[str, str]:
    """Write one .npy per array; returns data.files.paths."""
    paths = {}
    for split, (volumes, targets) in arrays.items():
        for name, array in ((f"x_{split}", volumes), (f"y_{split}", targets)):
            path = folder / f"{name}.npy"
            np.save(path, array)
            paths[name] = str(path)
    return paths


def collect(loader) -> tuple[np.ndarray, np.ndarray]:
    """Concatenate every batch a loader serves, in order."""
    batches = list(loader)
    volumes = np.concatenate([x.numpy() for x, _ in batches])
    targets = np.concatenate([y.numpy() for _, y in batches])
    return volumes, targets
