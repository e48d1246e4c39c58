"""The tf32 model setting reaches PyTorch's TF32 flags when the trainer sets the module up."""

import pytest
import torch
from omegaconf import OmegaConf

from train_config import compose_train
from volreg.module import regressor_from_settings
from volreg.tf32 import set_tf32

NEW_FLAGS = hasattr(torch.backends.cudnn, "conv") and hasattr(
    torch.backends.cudnn.conv, "fp32_precision"
)


def tf32_flags() -> tuple:
    if NEW_FLAGS:
        return (
            torch.backends.cudnn.conv.fp32_precision,
            torch.backends.cudnn.rnn.fp32_precision,
            torch.backends.cuda.matmul.fp32_precision,
        )
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


@pytest.fixture
def restore_flags():
    saved = tf32_flags()
    yield
    if NEW_FLAGS:
        conv, rnn, matmul = saved
        torch.backends.cudnn.conv.fp32_precision = conv
        torch.backends.cudnn.rnn.fp32_precision = rnn
        torch.backends.cuda.matmul.fp32_precision = matmul
    else:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def built_module(tmp_path, overrides):
    cfg = compose_train(tmp_path, overrides)
    settings = OmegaConf.to_container(cfg.model, resolve=True)
    settings["net"].update(in_channels=1, volume_shape=[4, 4, 4], num_targets=1)
    return regressor_from_settings(settings)


@pytest.mark.parametrize(
    "variant, expected",
    [
        ("keras_faithful", ("ieee", "ieee", "ieee") if NEW_FLAGS else (False, False)),
        ("pytorch_default", None),
    ],
)
def test_variant_sets_tf32_on_setup(tmp_path, restore_flags, variant, expected):
    before = tf32_flags()
    module = built_module(tmp_path, [f"model={variant}"])

    module.setup("fit")

    assert tf32_flags() == (before if expected is None else expected)


def test_tf32_true_allows_it(tmp_path, restore_flags):
    module = built_module(tmp_path, ["model.tf32=true"])

    module.setup("fit")

    assert tf32_flags() == (("tf32",) * 3 if NEW_FLAGS else (True, True))


def test_tf32_rejects_non_boolean():
    with pytest.raises(ValueError, match="invalid tf32='yes': expected true, false or null"):
        set_tf32("yes")
