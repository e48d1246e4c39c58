import os
import stat

import h5py
import numpy as np
import pytest
import torch
from volume_files import SHAPE, SIZES, collect, make_arrays, write_h5, write_npy, write_npz

from volreg.data import VolumeDataModule


def module(files: dict, **kwargs) -> VolumeDataModule:
    data = VolumeDataModule(source="files", files=files, shuffle=False, **kwargs)
    data.setup("fit")
    return data


def assert_serves(data: VolumeDataModule, arrays: dict) -> None:
    """Every split serves the stored arrays, cast to float32, with a channel axis, in order."""
    loaders = {
        "train": data.train_dataloader(),
        "val": data.val_dataloader(),
        "test": data.test_dataloader(),
    }
    for split, loader in loaders.items():
        volumes, targets = collect(loader)
        expected_x, expected_y = arrays[split]
        assert volumes.dtype == np.float32
        np.testing.assert_array_equal(volumes[:, 0], expected_x.astype(np.float32))
        np.testing.assert_array_equal(targets, expected_y.astype(np.float32))


@pytest.mark.parametrize("loading", ["memory", "lazy"])
def test_npz_keras_keys(tmp_path, arrays, loading):
    write_npz(tmp_path / "data.npz", arrays)

    data = module({"path": str(tmp_path / "data.npz"), "loading": loading})

    assert data.in_channels == 1
    assert data.volume_shape == SHAPE
    assert data.num_targets == 2
    assert_serves(data, arrays)


@pytest.mark.parametrize("loading", ["memory", "lazy"])
def test_h5_nested_datasets(tmp_path, arrays, loading):
    write_h5(tmp_path / "data.h5", arrays, group="run1/")
    keys = {"x_train": "run1/Xtr", "y_train": "run1/Ytr", "x_val": "run1/Xval"}
    keys |= {"y_val": "run1/Yval", "x_test": "run1/Xte", "y_test": "run1/Yte"}

    data = module({"path": str(tmp_path / "data.h5"), "keys": keys, "loading": loading})

    assert_serves(data, arrays)


@pytest.mark.parametrize("loading", ["memory", "lazy"])
def test_npy_file_per_array(tmp_path, arrays, loading):
    paths = write_npy(tmp_path, arrays)

    data = module({"paths": paths, "loading": loading})

    assert_serves(data, arrays)


def test_npy_lazy_is_memory_mapped(tmp_path, arrays):
    paths = write_npy(tmp_path, arrays)

    data = module({"paths": paths, "loading": "lazy"})

    reader = data._datasets["train"].split.x
    next(iter(data.train_dataloader()))
    assert isinstance(reader._array, np.memmap)


def test_no_test_set_without_test_paths(tmp_path, arrays):
    paths = write_npy(tmp_path, arrays)
    del paths["x_test"], paths["y_test"]

    data = module({"paths": paths})

    assert data.describe().split_sizes == {"train": SIZES["train"], "val": SIZES["val"]}


def test_targets_of_rank_one_served_as_matrix(tmp_path):
    arrays = make_arrays(targets=1)
    arrays = {split: (x, y[:, 0]) for split, (x, y) in arrays.items()}
    write_npz(tmp_path / "data.npz", arrays)

    data = module({"path": str(tmp_path / "data.npz")})

    _, targets = next(iter(data.train_dataloader()))
    assert targets.shape == (16, 1)
    assert data.num_targets == 1


@pytest.mark.parametrize("layout", ["auto", "channels_first"])
def test_channels_first_input(tmp_path, arrays, layout):
    stored = {split: (x[:, None], y) for split, (x, y) in arrays.items()}
    write_npz(tmp_path / "data.npz", stored)

    data = module({"path": str(tmp_path / "data.npz"), "layout": layout})

    assert data.in_channels == 1
    assert_serves(data, arrays)


@pytest.mark.parametrize("loading", ["memory", "lazy"])
def test_channels_last_equals_transposed_first(tmp_path, loading):
    rng = np.random.default_rng(3)
    first = {
        split: (rng.normal(size=(count, 2, 8, 6, 4)), rng.uniform(size=(count, 1)))
        for split, count in SIZES.items()
    }
    last = {split: (np.moveaxis(x, 1, -1).copy(), y) for split, (x, y) in first.items()}
    write_h5(tmp_path / "first.h5", first)
    write_h5(tmp_path / "last.h5", last)

    from_first = module(
        {"path": str(tmp_path / "first.h5"), "layout": "channels_first", "loading": loading}
    )
    from_last = module(
        {"path": str(tmp_path / "last.h5"), "layout": "channels_last", "loading": loading}
    )

    assert from_last.in_channels == 2
    assert from_last.volume_shape == (8, 6, 4)
    for x_first, x_last in zip(
        from_first.train_dataloader(), from_last.train_dataloader(), strict=True
    ):
        torch.testing.assert_close(x_first, x_last, rtol=0, atol=0)


def test_auto_layout_detects_channels_last(tmp_path, arrays):
    stored = {split: (x[..., None], y) for split, (x, y) in arrays.items()}
    write_npz(tmp_path / "data.npz", stored)

    data = module({"path": str(tmp_path / "data.npz")})

    assert data.in_channels == 1
    assert_serves(data, arrays)


def test_split_fractions_partition_rows(tmp_path):
    rng = np.random.default_rng(4)
    volumes = rng.normal(size=(40, *SHAPE))
    targets = np.arange(40, dtype=np.float64)  # the target is the row number
    np.savez(tmp_path / "all.npz", X=volumes, Y=targets)
    files = {"path": str(tmp_path / "all.npz"), "split_fractions": [0.7, 0.2, 0.1]}

    data = module(files, seed=5)

    rows = {}
    for split, loader in (
        ("train", data.train_dataloader()),
        ("val", data.val_dataloader()),
        ("test", data.test_dataloader()),
    ):
        served_x, served_y = collect(loader)
        rows[split] = served_y[:, 0].astype(int)
        np.testing.assert_array_equal(served_x[:, 0], volumes[rows[split]].astype(np.float32))
    assert [len(rows[s]) for s in ("train", "val", "test")] == [28, 8, 4]
    assert sorted(np.concatenate(list(rows.values())).tolist()) == list(range(40))


def test_split_fractions_seeded(tmp_path):
    np.savez(tmp_path / "all.npz", X=np.zeros((40, *SHAPE)), Y=np.arange(40.0))
    files = {"path": str(tmp_path / "all.npz"), "split_fractions": [0.8, 0.2]}

    val = {seed: collect(module(files, seed=seed).val_dataloader())[1] for seed in (0, 0, 1)}
    again = collect(module(files, seed=0).val_dataloader())[1]

    np.testing.assert_array_equal(val[0], again)
    assert not np.array_equal(val[0], val[1])
    assert "test" not in module(files, seed=0).describe().split_sizes


def test_split_fractions_lazy_h5_with_workers(tmp_path):
    rng = np.random.default_rng(6)
    volumes = rng.normal(size=(30, *SHAPE))
    with h5py.File(tmp_path / "all.h5", "w") as file:
        file["X"] = volumes
        file["Y"] = np.arange(30.0)
    files = {"path": str(tmp_path / "all.h5"), "split_fractions": [0.6, 0.4], "loading": "lazy"}

    data = module(files, num_workers=1, batch_size=4)

    served_x, served_y = collect(data.train_dataloader())
    rows = served_y[:, 0].astype(int)
    assert len(rows) == 18
    np.testing.assert_array_equal(served_x[:, 0], volumes[rows].astype(np.float32))


def test_auto_loading_follows_memory_limit(tmp_path, arrays):
    write_npz(tmp_path / "data.npz", arrays)
    path = str(tmp_path / "data.npz")

    small = module({"path": path, "loading": "auto", "memory_limit_gb": 1.0})
    tiny = module({"path": path, "loading": "auto", "memory_limit_gb": 1e-6})

    assert type(small._datasets["train"]).__name__ == "TensorBatches"
    assert type(tiny._datasets["train"]).__name__ == "LazyBatches"


def test_input_files_read_only_and_unchanged(tmp_path, arrays):
    write_h5(tmp_path / "data.h5", arrays)
    paths = write_npy(tmp_path, arrays)
    files = [tmp_path / "data.h5", *map(type(tmp_path), paths.values())]
    before = {path: (path.read_bytes(), os.stat(path).st_mtime_ns) for path in files}
    for path in files:
        path.chmod(stat.S_IRUSR)

    for settings in ({"path": str(tmp_path / "data.h5")}, {"paths": paths}):
        for loading in ("memory", "lazy"):
            data = module({**settings, "loading": loading})
            collect(data.train_dataloader())

    after = {path: (path.read_bytes(), os.stat(path).st_mtime_ns) for path in files}
    assert after == before
