import logging
import os

import numpy as np
import pytest
import torch

from volreg.data import DataError, VolumeDataModule, grf
from volreg.data.grf import GrfSettings, generate_fields, generate_split, wavenumber_magnitude


def fitted_spectrum(volumes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fit log P(k) = log A + n log k per volume over 1 <= |k| <= Nyquist; returns (A, n)."""
    shape = volumes.shape[1:]
    wavenumber = wavenumber_magnitude(shape)
    power = np.abs(np.fft.rfftn(volumes.astype(np.float64), axes=(1, 2, 3))) ** 2
    power /= np.prod(shape)
    modes = (wavenumber > 0) & (wavenumber <= shape[0] / 2)
    design = np.stack([np.ones(modes.sum()), np.log(wavenumber[modes])], axis=1)
    intercept, slope = np.linalg.lstsq(design, np.log(power[:, modes]).T, rcond=None)[0]
    # E[log X] = log E[X] - γ for an exponentially distributed periodogram value X
    return np.exp(intercept + np.euler_gamma), slope


@pytest.mark.parametrize("spectral_index", [-3.0, -2.0, -1.0, 0.0])
def test_power_spectrum_slope_recovered(spectral_index):
    count = 64
    rng = np.random.Generator(np.random.PCG64(1))
    volumes = generate_fields(
        np.full(count, 1.5), np.full(count, spectral_index), (16, 16, 16), rng
    )

    amplitude, slope = fitted_spectrum(volumes)

    # One 16³ volume gives the slope to about 0.12 RMS (measured); 64 volumes to about 0.015.
    assert abs(slope.mean() - spectral_index) < 0.05
    assert abs(amplitude.mean() - 1.5) < 0.1 * 1.5


def test_fields_have_zero_mean_float32():
    rng = np.random.Generator(np.random.PCG64(2))
    volumes = generate_fields(np.ones(4), np.full(4, -2.0), (8, 8, 8), rng)

    assert volumes.dtype == np.float32
    assert volumes.shape == (4, 8, 8, 8)
    np.testing.assert_allclose(volumes.mean(axis=(1, 2, 3)), 0.0, atol=1e-6)


def test_generation_is_deterministic():
    settings = GrfSettings((8, 8, 8), (10, 4, 4), (0.5, 2.0), (-3.0, -1.0), seed=7)

    first = generate_split(settings, "train")
    second = generate_split(settings, "train")

    np.testing.assert_array_equal(first.volumes, second.volumes)
    np.testing.assert_array_equal(first.parameters, second.parameters)


def test_chunk_size_does_not_change_fields(monkeypatch):
    settings = GrfSettings((8, 8, 8), (10, 0, 0), (0.5, 2.0), (-3.0, -1.0), seed=3)
    whole = generate_split(settings, "train").volumes

    monkeypatch.setattr(grf, "CHUNK_VOXELS", 3 * 8**3)  # three volumes per FFT chunk
    chunked = generate_split(settings, "train").volumes

    np.testing.assert_array_equal(chunked, whole)


def test_splits_and_seeds_differ():
    settings = GrfSettings((8, 8, 8), (10, 10, 4), (0.5, 2.0), (-3.0, -1.0), seed=7)
    other_seed = GrfSettings((8, 8, 8), (10, 10, 4), (0.5, 2.0), (-3.0, -1.0), seed=8)

    train = generate_split(settings, "train").volumes
    val = generate_split(settings, "val").volumes
    reseeded = generate_split(other_seed, "train").volumes

    assert not np.allclose(train, val)
    assert not np.allclose(train, reseeded)


def test_cache_key_covers_every_setting():
    base = GrfSettings((8, 8, 8), (10, 4, 4), (0.5, 2.0), (-3.0, -1.0), seed=0)
    variants = [
        GrfSettings((8, 8, 16), (10, 4, 4), (0.5, 2.0), (-3.0, -1.0), seed=0),
        GrfSettings((8, 8, 8), (11, 4, 4), (0.5, 2.0), (-3.0, -1.0), seed=0),
        GrfSettings((8, 8, 8), (10, 4, 4), (0.5, 3.0), (-3.0, -1.0), seed=0),
        GrfSettings((8, 8, 8), (10, 4, 4), (0.5, 2.0), (-3.0, 0.0), seed=0),
        GrfSettings((8, 8, 8), (10, 4, 4), (0.5, 2.0), (-3.0, -1.0), seed=1),
    ]

    keys = {base.cache_key()} | {variant.cache_key() for variant in variants}

    assert len(keys) == 1 + len(variants)


def test_datamodule_serves_targets_in_unit_range(small_grf):
    small_grf["grf"]["targets"] = ["amplitude", "spectral_index"]
    data = VolumeDataModule(**small_grf)
    data.setup("fit")

    x, y = next(iter(data.train_dataloader()))

    assert x.shape == (16, 1, 8, 8, 8)
    assert x.dtype == torch.float32
    assert y.shape == (16, 2)
    assert data.num_targets == 2
    assert data.target_names == ("amplitude", "spectral_index")
    assert float(y.min()) >= 0.0
    assert float(y.max()) <= 1.0


def test_target_matches_generated_parameter(small_grf):
    small_grf["grf"].update(targets=["spectral_index"], spectral_index_range=[-3.0, -1.0])
    data = VolumeDataModule(**small_grf, shuffle=False)
    data.setup("fit")
    settings = GrfSettings((8, 8, 8), (24, 8, 8), (0.5, 2.0), (-3.0, -1.0), seed=0)

    expected = generate_split(settings, "train")
    x, y = next(iter(data.train_dataloader()))

    np.testing.assert_array_equal(x[:, 0].numpy(), expected.volumes[:16])
    np.testing.assert_allclose(y[:, 0].numpy(), (expected.parameters[:16, 1] + 3.0) / 2.0, 1e-6)


def test_describe_before_setup_generates_nothing(small_grf, tmp_path):
    data = VolumeDataModule(**small_grf)

    assert data.in_channels == 1
    assert data.volume_shape == (8, 8, 8)
    assert data.num_targets == 1
    assert not (tmp_path / "cache").exists()


def test_second_module_reads_cache(small_grf, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="volreg.data")
    first = VolumeDataModule(**small_grf)
    first.prepare_data()
    first.setup()
    (cache_file,) = (tmp_path / "cache").glob("grf-*.npz")
    written = os.stat(cache_file).st_mtime_ns
    caplog.clear()

    second = VolumeDataModule(**small_grf)
    second.prepare_data()
    second.setup()

    messages = [record.getMessage() for record in caplog.records]
    assert not any(message.startswith("Generated") for message in messages)
    assert any(message.startswith("GRF cache hit") for message in messages)
    assert os.stat(cache_file).st_mtime_ns == written
    first_x, _ = next(iter(first.val_dataloader()))
    second_x, _ = next(iter(second.val_dataloader()))
    torch.testing.assert_close(first_x, second_x, rtol=0, atol=0)


def test_target_choice_reuses_cache(small_grf, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="volreg.data")
    VolumeDataModule(**small_grf).prepare_data()
    caplog.clear()

    small_grf["grf"]["targets"] = ["amplitude"]
    VolumeDataModule(**small_grf).setup()

    assert any(r.getMessage().startswith("GRF cache hit") for r in caplog.records)
    assert not any(r.getMessage().startswith("Generated") for r in caplog.records)
    assert len(list((tmp_path / "cache").glob("grf-*.npz"))) == 1


def test_prepare_data_skips_existing_cache(small_grf, caplog):
    # Lightning calls prepare_data before fit, test and predict: one read of the cache is enough.
    VolumeDataModule(**small_grf).prepare_data()
    data = VolumeDataModule(**small_grf)
    caplog.set_level(logging.INFO, logger="volreg.data")

    data.prepare_data()
    data.prepare_data()
    data.setup()

    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1
    assert messages[0].startswith("GRF cache hit")


def test_changed_setting_regenerates(small_grf, tmp_path):
    VolumeDataModule(**small_grf).prepare_data()
    small_grf["grf"]["seed"] = 1
    VolumeDataModule(**small_grf).prepare_data()

    assert len(list((tmp_path / "cache").glob("grf-*.npz"))) == 2


def test_corrupt_cache_regenerated(small_grf, tmp_path, caplog):
    VolumeDataModule(**small_grf).prepare_data()
    (cache_file,) = (tmp_path / "cache").glob("grf-*.npz")
    cache_file.write_bytes(b"not a zip file")

    with caplog.at_level(logging.WARNING, logger="volreg.data"):
        data = VolumeDataModule(**small_grf)
        data.setup()

    assert any("unreadable GRF cache" in r.getMessage() for r in caplog.records)
    assert len(next(iter(data.train_dataloader()))[0]) == 16


def test_unwritable_cache_still_serves(small_grf, tmp_path, caplog):
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the cache folder should be")
    small_grf["cache_dir"] = str(blocker / "cache")

    with caplog.at_level(logging.WARNING, logger="volreg.data"):
        data = VolumeDataModule(**small_grf)
        data.setup()

    assert any("Could not write GRF cache" in r.getMessage() for r in caplog.records)
    assert len(next(iter(data.train_dataloader()))[0]) == 16


def test_no_test_split_when_n_test_zero(small_grf):
    small_grf["grf"]["n_test"] = 0
    data = VolumeDataModule(**small_grf)
    data.setup()

    with pytest.raises(DataError, match="no test split.*data.grf.n_test"):
        data.test_dataloader()
    with pytest.raises(DataError, match="for predict: .*data.predict_split"):
        data.predict_dataloader()


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("shape", [8, 8], "data.grf.shape"),
        ("n_val", 0, "data.grf.n_val=0"),
        ("targets", ["amplitude", "amplitude"], "data.grf.targets"),
        ("targets", ["mass"], "data.grf.targets"),
        ("amplitude_range", [2.0, 1.0], "data.grf.amplitude_range"),
        ("spectral_index_range", [-2.0, -2.0], "data.grf.spectral_index_range"),
        ("spectral_index_range", [-1.0, -2.0], "low <= high"),
        ("amplitude_range", [-1.0, 1.0], ">= 0"),
    ],
)
def test_invalid_grf_setting_rejected(small_grf, setting, value, message):
    small_grf["grf"][setting] = value

    with pytest.raises(ValueError, match=message):
        VolumeDataModule(**small_grf).describe()


def test_fixed_amplitude_when_not_a_target(small_grf):
    small_grf["grf"].update(targets=["spectral_index"], amplitude_range=[1.0, 1.0])
    data = VolumeDataModule(**small_grf)

    data.setup()

    assert data.describe().target_names == ("spectral_index",)
    settings = GrfSettings((8, 8, 8), (4, 0, 0), (1.0, 1.0), (-3.0, -1.0), seed=0)
    np.testing.assert_array_equal(generate_split(settings, "train").parameters[:, 0], 1.0)


def test_fixed_range_rejected_for_a_target(small_grf):
    small_grf["grf"].update(targets=["amplitude"], amplitude_range=[1.0, 1.0])

    with pytest.raises(ValueError, match="for the target 'amplitude'"):
        VolumeDataModule(**small_grf).describe()
