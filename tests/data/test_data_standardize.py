import numpy as np
import pytest
import torch
from volume_files import SHAPE, collect

from volreg.data import VolumeDataModule


@pytest.fixture
def shifted_files(tmp_path):
    """Splits whose statistics differ, so fitting on anything but train shows."""
    rng = np.random.default_rng(0)
    arrays = {
        "Xtr": rng.normal(3.0, 2.0, size=(30, 2, *SHAPE)),
        "Ytr": rng.normal([10.0, -1.0], [4.0, 0.5], size=(30, 2)),
        "Xval": rng.normal(-5.0, 0.1, size=(10, 2, *SHAPE)),
        "Yval": rng.normal(100.0, 1.0, size=(10, 2)),
        "Xte": rng.normal(7.0, 9.0, size=(10, 2, *SHAPE)),
        "Yte": rng.normal(-50.0, 1.0, size=(10, 2)),
    }
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    return path, arrays


def module(path, standardize, loading="memory"):
    files = {"path": str(path), "layout": "channels_first", "loading": loading}
    data = VolumeDataModule(source="files", files=files, standardize=standardize, shuffle=False)
    data.setup()
    return data


@pytest.mark.parametrize("loading", ["memory", "lazy"])
def test_statistics_from_train_only(shifted_files, loading):
    path, arrays = shifted_files

    data = module(path, "both", loading)

    train_x = arrays["Xtr"]
    expected_mean = train_x.mean(axis=(0, 2, 3, 4))
    expected_std = train_x.std(axis=(0, 2, 3, 4))
    np.testing.assert_allclose(data.input_scaler.mean.numpy(), expected_mean, rtol=1e-5)
    np.testing.assert_allclose(data.input_scaler.std.numpy(), expected_std, rtol=1e-5)
    np.testing.assert_allclose(data.target_mean.numpy(), arrays["Ytr"].mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(data.target_std.numpy(), arrays["Ytr"].std(axis=0), rtol=1e-5)

    served_val_x, served_val_y = collect(data.val_dataloader())
    expected_val_x = (arrays["Xval"] - expected_mean[:, None, None, None]) / expected_std[
        :, None, None, None
    ]
    np.testing.assert_allclose(served_val_x, expected_val_x, rtol=1e-4, atol=1e-4)
    assert abs(served_val_y.mean()) > 5  # val targets keep their offset from the train mean


def test_train_served_standardised(shifted_files):
    path, _ = shifted_files

    volumes, targets = collect(module(path, "both").train_dataloader())

    np.testing.assert_allclose(volumes.mean(axis=(0, 2, 3, 4)), 0.0, atol=1e-4)
    np.testing.assert_allclose(volumes.std(axis=(0, 2, 3, 4)), 1.0, atol=1e-4)
    np.testing.assert_allclose(targets.mean(axis=0), 0.0, atol=1e-5)
    np.testing.assert_allclose(targets.std(axis=0), 1.0, atol=1e-5)


def test_inverse_transform_restores_target_units(shifted_files):
    path, arrays = shifted_files
    data = module(path, "targets")

    _, served = collect(data.test_dataloader())
    restored = data.inverse_transform_targets(torch.from_numpy(served))

    np.testing.assert_allclose(restored.numpy(), arrays["Yte"], rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    ("standardize", "inputs_changed", "targets_changed"),
    [("none", False, False), ("inputs", True, False), ("targets", False, True)],
)
def test_standardize_choices(shifted_files, standardize, inputs_changed, targets_changed):
    path, arrays = shifted_files

    data = module(path, standardize)
    volumes, targets = collect(data.train_dataloader())

    same_inputs = np.allclose(volumes, arrays["Xtr"].astype(np.float32))
    same_targets = np.allclose(targets, arrays["Ytr"].astype(np.float32))
    assert same_inputs != inputs_changed
    assert same_targets != targets_changed


def test_off_by_default_identity_scaler(small_grf):
    data = VolumeDataModule(**small_grf)
    data.setup()
    predictions = torch.rand(5, 1)

    assert torch.equal(data.target_mean, torch.zeros(1))
    assert torch.equal(data.target_std, torch.ones(1))
    assert torch.equal(data.inverse_transform_targets(predictions), predictions)


def test_constant_channel_keeps_unit_std(tmp_path):
    np.savez(
        tmp_path / "data.npz",
        Xtr=np.ones((8, *SHAPE)),
        Ytr=np.zeros(8),
        Xval=np.ones((4, *SHAPE)),
        Yval=np.zeros(4),
    )
    files = {"path": str(tmp_path / "data.npz"), "keys": {"x_test": None, "y_test": None}}
    data = VolumeDataModule(source="files", files=files, standardize="both")
    data.setup()

    volumes, targets = collect(data.val_dataloader())

    assert np.isfinite(volumes).all()
    np.testing.assert_array_equal(targets, 0.0)
    assert float(data.target_std[0]) == 1.0
