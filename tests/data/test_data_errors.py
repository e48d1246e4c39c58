"""Each kind of bad input gets an error that names the array, file, key and shape, and the fix."""

import h5py
import numpy as np
import pytest
from volume_files import SHAPE, make_arrays, write_h5, write_npy, write_npz

from volreg.data import DataError, DataFileNotFoundError, ModelMismatchError, VolumeDataModule


def files_module(files: dict, **kwargs) -> VolumeDataModule:
    return VolumeDataModule(source="files", files=files, **kwargs)


def test_missing_file(tmp_path, arrays):
    paths = write_npy(tmp_path, arrays)
    paths["x_val"] = str(tmp_path / "nowhere" / "Xval.npy")

    with pytest.raises(DataFileNotFoundError) as error:
        files_module({"paths": paths}).describe()

    message = str(error.value)
    assert "x_val file not found" in message
    assert str(tmp_path / "nowhere" / "Xval.npy") in message
    assert "data.files.paths.x_val" in message
    assert isinstance(error.value, FileNotFoundError)


def test_missing_npz_key_lists_keys(tmp_path, arrays):
    write_npz(tmp_path / "data.npz", arrays)

    with pytest.raises(DataError) as error:
        files_module({"path": str(tmp_path / "data.npz"), "keys": {"x_train": "X_train"}}).setup()

    message = str(error.value)
    assert "'X_train'" in message
    assert "data.npz" in message
    assert "'Xtr', 'Ytr', 'Xval'" in message
    assert "data.files.keys.x_train" in message


def test_missing_h5_dataset_lists_datasets(tmp_path, arrays):
    write_h5(tmp_path / "data.h5", arrays, group="sim/")

    with pytest.raises(DataError) as error:
        files_module({"path": str(tmp_path / "data.h5")}).describe()

    message = str(error.value)
    assert "dataset 'Xtr' for x_train not found" in message
    assert "data.h5" in message
    assert "'sim/Xtr'" in message
    assert "data.files.keys.x_train" in message


def test_missing_test_key_names_fix(tmp_path, arrays):
    np.savez(
        tmp_path / "data.npz",
        Xtr=arrays["train"][0],
        Ytr=arrays["train"][1],
        Xval=arrays["val"][0],
        Yval=arrays["val"][1],
    )

    with pytest.raises(DataError, match="key 'Xte' for x_test not found"):
        files_module({"path": str(tmp_path / "data.npz")}).describe()
    data = files_module(
        {"path": str(tmp_path / "data.npz"), "keys": {"x_test": None, "y_test": None}}
    )
    assert set(data.describe().split_sizes) == {"train", "val"}


def test_length_mismatch(tmp_path, arrays):
    arrays["val"] = arrays["val"][0], arrays["val"][1][:-1]
    write_npz(tmp_path / "data.npz", arrays)

    with pytest.raises(DataError) as error:
        files_module({"path": str(tmp_path / "data.npz")}).describe()

    message = str(error.value)
    assert "x_val" in message
    assert "key 'Xval'" in message
    assert "6 samples (shape (6, 8, 8, 8))" in message
    assert "has 5 (shape (5, 2))" in message


@pytest.mark.parametrize("shape", [(20, 8, 8), (20, 1, 8, 8, 8, 1)])
def test_wrong_input_rank(tmp_path, arrays, shape):
    arrays["train"] = np.zeros(shape), arrays["train"][1]
    write_npz(tmp_path / "data.npz", arrays)

    with pytest.raises(DataError) as error:
        files_module({"path": str(tmp_path / "data.npz")}).describe()

    message = str(error.value)
    assert f"x_train ({tmp_path / 'data.npz'}, key 'Xtr') has shape {shape}" in message
    assert f"rank {len(shape)}" in message
    assert "(N, D, H, W)" in message


def test_wrong_target_rank(tmp_path, arrays):
    arrays["train"] = arrays["train"][0], np.zeros((20, 2, 1))
    write_npz(tmp_path / "data.npz", arrays)

    with pytest.raises(DataError, match=r"y_train .*key 'Ytr'.* shape \(20, 2, 1\).*\(N, P\)"):
        files_module({"path": str(tmp_path / "data.npz")}).describe()


def test_volume_shape_mismatch_with_model(tmp_path, arrays):
    write_npz(tmp_path / "data.npz", arrays)
    data = files_module({"path": str(tmp_path / "data.npz")})

    with pytest.raises(ModelMismatchError) as error:
        data.check_model_fit(in_channels=1, volume_shape=(16, 16, 16), num_targets=2)

    message = str(error.value)
    assert "data.npz" in message
    assert "key 'Xtr'" in message
    assert "(1, 8, 8, 8)" in message
    assert "(1, 16, 16, 16)" in message
    assert "resample or crop" in message
    data.check_model_fit(in_channels=1, volume_shape=SHAPE, num_targets=2)


def test_volume_shape_differs_between_splits(tmp_path, arrays):
    arrays["val"] = np.zeros((6, 8, 8, 4)), arrays["val"][1]
    write_npz(tmp_path / "data.npz", arrays)

    with pytest.raises(DataError, match=r"x_val .* volume shape \(8, 8, 4\).*\(8, 8, 8\)"):
        files_module({"path": str(tmp_path / "data.npz")}).describe()


@pytest.mark.parametrize("loading", ["memory", "lazy"])
def test_non_finite_values(tmp_path, arrays, loading):
    volumes = arrays["val"][0]
    volumes[2, 1, 3, 4] = np.nan
    volumes[4, 0, 0, 0] = np.inf
    volumes[4, 5, 0, 0] = -np.inf
    write_h5(tmp_path / "data.h5", arrays)

    data = files_module({"path": str(tmp_path / "data.h5"), "loading": loading})
    with pytest.raises(DataError) as error:
        data.setup()

    message = str(error.value)
    assert "x_val" in message
    assert "dataset 'Xval'" in message
    assert "shape (6, 8, 8, 8)" in message
    assert "3 non-finite values" in message
    assert "(2, 1, 3, 4) (sample 2)" in message


def test_non_finite_target_index_refers_to_stored_rows(tmp_path):
    targets = np.arange(40.0)
    targets[33] = np.nan
    np.savez(tmp_path / "all.npz", X=np.zeros((40, *SHAPE)), Y=targets)
    files = {"path": str(tmp_path / "all.npz"), "split_fractions": [0.5, 0.5]}

    with pytest.raises(
        DataError, match=r"y \(.*all.npz, key 'Y'\).* 1 non-finite value .*\(33,\) \(sample 33\)"
    ):
        files_module(files).setup()


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, bool])
def test_integer_or_bool_inputs(tmp_path, arrays, dtype):
    arrays["train"] = arrays["train"][0].astype(dtype), arrays["train"][1]
    write_npz(tmp_path / "data.npz", arrays)

    with pytest.raises(DataError) as error:
        files_module({"path": str(tmp_path / "data.npz")}).describe()

    message = str(error.value)
    assert f"x_train ({tmp_path / 'data.npz'}, key 'Xtr') has dtype {np.dtype(dtype)}" in message
    assert "shape (20, 8, 8, 8)" in message
    assert "float32" in message


def test_empty_split(tmp_path, arrays):
    arrays["val"] = np.zeros((0, *SHAPE)), np.zeros((0, 2))
    paths = write_npy(tmp_path, arrays)

    with pytest.raises(DataError) as error:
        files_module({"paths": paths}).describe()

    message = str(error.value)
    assert "x_val" in message
    assert "x_val.npy" in message
    assert "empty (shape (0, 8, 8, 8))" in message


def test_fractions_leave_split_empty(tmp_path):
    np.savez(tmp_path / "all.npz", X=np.zeros((10, *SHAPE)), Y=np.zeros(10))
    files = {"path": str(tmp_path / "all.npz"), "split_fractions": [0.9, 0.07, 0.03]}

    with pytest.raises(DataError) as error:
        files_module(files).describe()

    message = str(error.value)
    assert "10 samples" in message
    assert "all.npz" in message
    assert "key 'X'" in message
    assert "the test split empty" in message
    assert "'test': 0" in message


def test_fractions_must_sum_to_one(tmp_path):
    np.savez(tmp_path / "all.npz", X=np.zeros((10, *SHAPE)), Y=np.zeros(10))
    files = {"path": str(tmp_path / "all.npz"), "split_fractions": [0.5, 0.2]}

    with pytest.raises(DataError, match="sum to 0.7, not 1"):
        files_module(files).describe()


@pytest.mark.parametrize("shape", [(20, 1, 8, 8, 1), (20, 8, 8, 8, 8)])
def test_ambiguous_layout(tmp_path, arrays, shape):
    arrays["train"] = np.zeros(shape), arrays["train"][1]
    write_npz(tmp_path / "data.npz", arrays)

    with pytest.raises(DataError) as error:
        files_module({"path": str(tmp_path / "data.npz")}).describe()

    message = str(error.value)
    assert f"x_train ({tmp_path / 'data.npz'}, key 'Xtr') has shape {shape}" in message
    assert "data.files.layout=channels_first" in message
    assert "data.files.layout=channels_last" in message


def test_more_targets_than_model(tmp_path, arrays):
    write_npz(tmp_path / "data.npz", arrays)
    data = files_module({"path": str(tmp_path / "data.npz")})

    with pytest.raises(ModelMismatchError) as error:
        data.check_model_fit(in_channels=1, volume_shape=SHAPE, num_targets=1)

    message = str(error.value)
    assert "data.npz" in message
    assert "key 'Xtr'" in message
    assert "2 target(s) per sample but the model predicts 1" in message


def test_fewer_targets_than_model(small_grf):
    data = VolumeDataModule(**small_grf)

    with pytest.raises(
        ModelMismatchError, match="1 target\\(s\\) per sample but the model predicts 2"
    ):
        data.check_model_fit(in_channels=1, volume_shape=(8, 8, 8), num_targets=2)


def test_grf_shape_mismatch_with_model(small_grf):
    data = VolumeDataModule(**small_grf)

    with pytest.raises(ModelMismatchError, match=r"data.grf.shape=\[8, 8, 8\].*\(1, 16, 16, 16\)"):
        data.check_model_fit(in_channels=1, volume_shape=(16, 16, 16), num_targets=1)


def test_no_file_configured():
    with pytest.raises(DataError, match="no file for x_train: set data.files.path"):
        files_module({}).describe()


def test_unsupported_suffix(tmp_path):
    (tmp_path / "data.csv").write_text("1,2,3")

    with pytest.raises(DataError, match=r"unsupported file type '.csv' for x_train.*\.npy"):
        files_module({"path": str(tmp_path / "data.csv")}).describe()


def test_corrupt_h5(tmp_path):
    (tmp_path / "data.h5").write_bytes(b"not hdf5")

    with pytest.raises(DataError, match=r"could not open .*data.h5 for x_train as HDF5"):
        files_module({"path": str(tmp_path / "data.h5")}).describe()


def test_h5_group_is_not_dataset(tmp_path, arrays):
    write_h5(tmp_path / "data.h5", arrays, group="run/")

    with pytest.raises(DataError, match="dataset 'run' for x_train not found"):
        files_module({"path": str(tmp_path / "data.h5"), "keys": {"x_train": "run"}}).describe()


def test_split_paths_with_fractions(tmp_path, arrays):
    paths = write_npy(tmp_path, arrays)

    with pytest.raises(DataError, match="data.files.paths.x_train is not read"):
        files_module({"paths": paths, "split_fractions": [0.8, 0.2]}).describe()


def test_whole_data_path_without_fractions(tmp_path, arrays):
    paths = write_npy(tmp_path, arrays)
    paths["x"] = paths["x_train"]

    with pytest.raises(DataError, match="data.files.paths.x is read only with"):
        files_module({"paths": paths}).describe()


def test_unknown_setting_key():
    with pytest.raises(DataError, match=r"unknown key\(s\) \['layuot'\] in data.files"):
        files_module({"layuot": "channels_last"})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"source": "hdf5"}, "data.source"),
        ({"standardize": "yes"}, "data.standardize"),
        ({"predict_split": "all"}, "data.predict_split"),
        ({"files": {"layout": "NCDHW"}}, "data.files.layout"),
        ({"files": {"loading": "mmap"}}, "data.files.loading"),
    ],
)
def test_invalid_choice_lists_allowed(kwargs, name):
    with pytest.raises(ValueError, match=f"invalid {name}=.*choose one of"):
        VolumeDataModule(**kwargs)


def test_zero_batch_size():
    with pytest.raises(DataError, match="invalid data.val_batch_size=0"):
        VolumeDataModule(val_batch_size=0)


def test_on_device_with_workers():
    with pytest.raises(DataError, match="on_device=true .* num_workers=2"):
        VolumeDataModule(on_device=True, num_workers=2)


def test_on_device_with_lazy_loading(tmp_path, arrays):
    write_h5(tmp_path / "data.h5", arrays)
    data = files_module({"path": str(tmp_path / "data.h5"), "loading": "lazy"}, on_device=True)

    with pytest.raises(DataError, match="data.files.loading=memory or data.on_device=false"):
        data.setup()


def test_dataloader_before_setup(small_grf):
    with pytest.raises(RuntimeError, match=r"call setup\(\)"):
        VolumeDataModule(**small_grf).train_dataloader()


def test_h5_object_dataset_rejected(tmp_path):
    arrays = make_arrays()
    write_h5(tmp_path / "data.h5", arrays)
    with h5py.File(tmp_path / "data.h5", "a") as file:
        del file["Ytr"]
        file["Ytr"] = np.array([b"a"] * 20)

    with pytest.raises(DataError, match=r"y_train .*dtype \|S1.*numeric targets"):
        files_module({"path": str(tmp_path / "data.h5")}).describe()
