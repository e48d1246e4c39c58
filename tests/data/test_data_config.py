import dataclasses
import inspect
from pathlib import Path

import hydra
import pytest
from hydra.core.config_store import ConfigStore
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from volreg.data import DataConfig, VolumeDataModule, default_cache_dir

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@pytest.fixture
def compose():
    """Compose ``data=<group>`` over the registered schema, as the training entry point does."""
    ConfigStore.instance().store(group="schema", name="data", node=DataConfig)

    def run(group: str, overrides: list[str] = ()):
        with hydra.initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return hydra.compose(config_name=f"data/{group}", overrides=list(overrides)).data

    return run


@pytest.mark.parametrize("group", ["grf", "files"])
def test_group_composes_to_schema(compose, group):
    config = compose(group)

    assert OmegaConf.get_type(config) is DataConfig
    assert config.source == group
    assert config._target_ == "volreg.data.VolumeDataModule"


def test_grf_group_instantiates(compose, tmp_path):
    config = compose(
        "grf",
        [f"data.cache_dir={tmp_path}", "data.grf.n_train=12", "data.grf.shape=[8,8,8]"],
    )

    data = instantiate(config)

    assert isinstance(data, VolumeDataModule)
    assert data.volume_shape == (8, 8, 8)
    assert data.describe().split_sizes == {"train": 12, "val": 500, "test": 500}
    assert data.cache_dir == tmp_path


def test_files_group_instantiates(compose, tmp_path):
    config = compose("files", ["data.files.path=arrays.npz", "data.files.layout=channels_last"])

    data = instantiate(config)

    assert data.files.path == "arrays.npz"
    assert data.files.layout == "channels_last"
    assert data.files.keys.x_train == "Xtr"


@pytest.mark.parametrize(
    "override",
    [
        "data.batchsize=8",
        "data.grf.n_trian=10",
        "data.files.keys.x_trian=X",
        "data.grf.n_train=many",
    ],
)
def test_misspelt_override_fails_at_composition(compose, override):
    with pytest.raises(ConfigCompositionException):
        compose("grf", [override])


def test_misspelt_yaml_key_fails_at_composition(compose, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "typo.yaml").write_text(
        "defaults:\n  - /schema/data@_here_\n  - _self_\n\nsuffle: false\n"
    )
    ConfigStore.instance().store(group="schema", name="data", node=DataConfig)

    with hydra.initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        with pytest.raises(ConfigCompositionException, match="suffle"):
            hydra.compose(config_name="data/typo")


def test_schema_fields_match_constructor():
    fields = {field.name for field in dataclasses.fields(DataConfig)} - {"_target_"}
    parameters = set(inspect.signature(VolumeDataModule.__init__).parameters) - {"self"}

    assert fields == parameters


def test_schema_defaults_match_constructor(monkeypatch, tmp_path):
    monkeypatch.setenv("VOLREG_CACHE", str(tmp_path))
    defaults = OmegaConf.to_container(OmegaConf.structured(DataConfig), resolve=True)
    parameters = inspect.signature(VolumeDataModule.__init__).parameters

    for name, value in defaults.items():
        if name in ("_target_", "grf", "files", "cache_dir"):
            continue
        assert parameters[name].default == value, name
    assert Path(defaults["cache_dir"]) == default_cache_dir() == tmp_path


@pytest.mark.parametrize("group", ["grf", "files"])
def test_cache_dir_resolves_without_environment(compose, monkeypatch, group):
    monkeypatch.delenv("VOLREG_CACHE", raising=False)

    config = compose(group)

    assert config.cache_dir == "~/.cache/volreg"
    assert instantiate(config).cache_dir == Path.home() / ".cache" / "volreg"


def test_cache_dir_default_follows_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("VOLREG_CACHE", str(tmp_path / "volreg"))
    assert VolumeDataModule().cache_dir == tmp_path / "volreg"

    monkeypatch.delenv("VOLREG_CACHE")
    assert VolumeDataModule().cache_dir == Path.home() / ".cache" / "volreg"
