"""Composition of every option of every config group, and typed schemas that reject typos."""

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ValidationError

from train_config import compose_train
from volreg.train import CONFIG_DIR

GROUPS = {
    path.name: sorted(option.stem for option in path.glob("*.yaml"))
    for path in Path(CONFIG_DIR).iterdir()
    if path.is_dir() and path.name != "hydra"
}
OPTIONS = [
    (group, option) for group, options in GROUPS.items() for option in options if group != "logger"
]
# Groups outside train.yaml's defaults list are added with '+group=option'.
DEFAULT_GROUPS = {
    next(iter(entry))
    for entry in OmegaConf.load(Path(CONFIG_DIR) / "train.yaml").defaults
    if isinstance(entry, DictConfig)
}


def test_every_group_has_options():
    for group in (
        "data",
        "model",
        "trainer",
        "callbacks",
        "logger",
        "paths",
        "experiment",
        "debug",
    ):
        assert GROUPS.get(group), f"conf/{group} has no options"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes(tmp_path, group, option):
    prefix = "" if group in DEFAULT_GROUPS else "+"
    cfg = compose_train(tmp_path, [f"{prefix}{group}={option}"])

    assert cfg.model.net.widths == [2, 2, 4]
    assert "_target_" in cfg.trainer


@pytest.mark.parametrize("loggers", ["[tensorboard]", "[csv]", "[tensorboard,csv]"])
def test_logger_options_compose(tmp_path, loggers):
    cfg = compose_train(tmp_path, [f"logger={loggers}"])

    assert set(cfg.logger) == set(loggers.strip("[]").split(","))


def test_variants_differ_in_every_port_setting(tmp_path):
    keras_cfg = compose_train(tmp_path, ["model=keras_faithful"])
    port_cfg = compose_train(tmp_path, ["model=pytorch_default"])
    keras, port = keras_cfg.model, port_cfg.model

    assert (port.net.dropout, keras.net.dropout) == ("channel", "element")
    assert (port.net.residual, keras.net.residual) == ("shared", "separate")
    assert (port.net.bn_running_var, keras.net.bn_running_var) == ("unbiased", "biased")
    assert (port_cfg.data.shuffle, keras_cfg.data.shuffle) == (False, True)
    assert (port.net.bn_momentum, keras.net.bn_momentum) == (0.1, 0.01)
    assert (port.net.bn_eps, keras.net.bn_eps) == (1e-5, 1e-3)
    assert (port.net.init, keras.net.init) == ("port", "keras")
    assert port.optimizer._target_ == "torch.optim.Adam"
    assert keras.optimizer._target_ == "volreg.optim.KerasAdam"
    assert port.optimizer.eps == keras.optimizer.eps == 1e-7
    assert (port.loss.target_layout, keras.loss.target_layout) == ("broadcast", "matched")


def test_setting_overrides_from_command_line(tmp_path):
    cfg = compose_train(tmp_path, ["model=pytorch_default", "model.net.dropout=element"])

    assert cfg.model.net.dropout == "element"


@pytest.mark.parametrize("override", ["model.net.dropuot=element", "data.shufle=false"])
def test_misspelt_override_fails(tmp_path, override):
    with pytest.raises(ConfigCompositionException, match="Could not override"):
        compose_train(tmp_path, [override])


def test_wrong_type_fails(tmp_path):
    with pytest.raises(ConfigCompositionException) as error:
        compose_train(tmp_path, ["model.net.bn_eps=small"])

    assert isinstance(error.value.__cause__, ValidationError)


def test_misspelt_key_in_yaml_fails(tmp_path):
    experiment = Path(CONFIG_DIR) / "experiment" / "_typo_test.yaml"
    experiment.write_text("# @package _global_\nmodel:\n  net:\n    dropuot: element\n")
    try:
        with pytest.raises(ConfigCompositionException) as error:
            compose_train(tmp_path, ["experiment=_typo_test"])
    finally:
        experiment.unlink()

    assert "Key 'dropuot' not in 'NetConfig'" in str(error.value)


def test_trainer_benchmark_reaches_cudnn(tmp_path):
    before = torch.backends.cudnn.benchmark
    try:
        cfg = compose_train(tmp_path, ["trainer.benchmark=true"])
        instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert torch.backends.cudnn.benchmark is True
        cfg = compose_train(tmp_path, ["trainer.benchmark=false"])
        instantiate(cfg.trainer, logger=False, enable_checkpointing=False)
        assert torch.backends.cudnn.benchmark is False
    finally:
        torch.backends.cudnn.benchmark = before
