"""The tf32 model setting reaches PyTorch's TF32 flags when the trainer sets the module up."""

import pytest
import torch
from omegaconf import OmegaConf

from train_config import compose_train
from volreg.module import regressor_from_settings
from volreg.tf32 import set_tf32


def tf32_flags() -> tuple[bool, bool]:
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.fixture
def restore_flags():
    saved = tf32_flags()
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def built_module(tmp_path, overrides):
    cfg = compose_train(tmp_path, overrides)
    settings = OmegaConf.to_container(cfg.model, resolve=True)
    settings["net"].update(in_channels=1, volume_shape=[4, 4, 4], num_targets=1)
    return regressor_from_settings(settings)


def test_keras_faithful_forbids_tf32(tmp_path, restore_flags):
    module = built_module(tmp_path, ["model=keras_faithful"])

    module.setup("fit")

    assert tf32_flags() == (False, False)
    assert torch.get_float32_matmul_precision() == "highest"


def test_tf32_true_allows_it(tmp_path, restore_flags):
    module = built_module(tmp_path, ["model.tf32=true"])

    module.setup("fit")

    assert tf32_flags() == (True, True)
    assert torch.get_float32_matmul_precision() == "high"


def test_null_restores_flags_of_earlier_job(tmp_path, restore_flags):
    # A sweep runs keras_faithful and pytorch_default jobs in one process.
    built_module(tmp_path, ["model=keras_faithful"]).setup("fit")

    built_module(tmp_path, ["model=pytorch_default"]).setup("fit")

    # PyTorch's defaults: TF32 for cuDNN convolutions, not for matrix products.
    assert tf32_flags() == (True, False)


def test_tf32_rejects_non_boolean():
    with pytest.raises(ValueError, match="invalid tf32='yes': expected true, false or null"):
        set_tf32("yes")
