"""Fixtures of the data tests."""

import pytest
from volume_files import make_arrays


@pytest.fixture
def arrays():
    return make_arrays()


@pytest.fixture
def small_grf(tmp_path):
    """Keyword arguments of a tiny GRF data module with its own cache folder."""
    return {
        "source": "grf",
        "grf": {"shape": [8, 8, 8], "n_train": 24, "n_val": 8, "n_test": 8},
        "cache_dir": str(tmp_path / "cache"),
    }
