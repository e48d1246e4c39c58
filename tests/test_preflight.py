"""Checks before training: resume checkpoints, accelerators, data without a test split."""

import json

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from train_config import compose_train
from volreg.preflight import check_accelerator, check_model_settings, check_resume
from volreg.train import run


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("trained")
    run(compose_train(tmp_path, ["trainer.max_epochs=1"]))
    return tmp_path / "run" / "checkpoints" / "last.ckpt"


def test_resume_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="ckpt_path=.*missing.ckpt not found"):
        run(compose_train(tmp_path, [f"ckpt_path={tmp_path / 'missing.ckpt'}"]))


def test_resume_file_that_is_not_checkpoint(tmp_path):
    not_checkpoint = tmp_path / "arrays.npz"
    np.savez(not_checkpoint, Xtr=np.zeros(3))

    with pytest.raises(ValueError, match="is not a volreg checkpoint"):
        run(compose_train(tmp_path, [f"ckpt_path={not_checkpoint}"]))


def test_resume_other_architecture_names_overrides(tmp_path, trained_checkpoint):
    with pytest.raises(ValueError) as error:
        run(
            compose_train(tmp_path, ["model.net.widths=[4,4,8]", f"ckpt_path={trained_checkpoint}"])
        )

    message = str(error.value)
    assert "model.net.widths: checkpoint [2, 2, 4], this run [4, 4, 8]" in message
    assert "model.net.widths=[2,2,4]" in message


def test_resume_other_settings_warns(tmp_path, trained_checkpoint, caplog):
    settings = torch.load(trained_checkpoint, weights_only=True)["hyper_parameters"]["settings"]
    settings = json.loads(json.dumps(settings))
    settings["net"]["bn_eps"] = 1e-5

    check_resume(str(trained_checkpoint), settings)

    assert "model.net.bn_eps: checkpoint 0.001, this run 1e-05" in caplog.text


def test_gpu_without_cuda_is_rejected():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="trainer.accelerator=gpu but PyTorch finds no CUDA GPU"):
        check_accelerator("gpu")


def test_files_without_test_split_train_and_skip_test(tmp_path, caplog):
    rng = np.random.default_rng(0)
    arrays = tmp_path / "arrays.npz"
    np.savez(
        arrays,
        Xtr=rng.random((32, 8, 8, 8)),
        Ytr=rng.random(32),
        Xval=rng.random((16, 8, 8, 8)),
        Yval=rng.random(16),
    )

    run(
        compose_train(
            tmp_path,
            [
                "data=files",
                f"data.files.path={arrays}",
                "data.files.keys.x_test=null",
                "data.files.keys.y_test=null",
            ],
        )
    )

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["test"] == {}
    assert "the data has no test split" in caplog.text


def test_train_false_tests_given_checkpoint(tmp_path, trained_checkpoint):
    trained_metrics = json.loads((trained_checkpoint.parents[1] / "metrics.json").read_text())

    run(compose_train(tmp_path, ["train=false", f"ckpt_path={trained_checkpoint}"]))

    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test"]["test/mae"] == pytest.approx(trained_metrics["test"]["test/mae"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.optimizer.foreach=true", "invalid foreach=True with fused=True"),
        ("model.net.dropout=spatial", "invalid dropout='spatial': choose one of"),
        ("model.loss.kind=l3", "invalid loss kind='l3'"),
        ("model.memory_format=cl", "invalid memory_format='cl'"),
    ],
)
def test_invalid_model_setting_fails_before_data(tmp_path, override, message):
    with pytest.raises(ValueError, match=f"a model setting is invalid: {message}"):
        run(compose_train(tmp_path, [override]))

    assert not (tmp_path / "cache").exists()


def test_invalid_trainer_setting_fails_before_data(tmp_path):
    with pytest.raises(Exception, match="Precision 'bf17' is invalid"):
        run(compose_train(tmp_path, ["trainer.precision=bf17"]))

    assert not (tmp_path / "cache").exists()


def test_model_check_leaves_random_state(tmp_path):
    # The check builds a stand-in network; a seeded run must still get the same weights.
    settings = OmegaConf.to_container(compose_train(tmp_path).model, resolve=True)
    torch.manual_seed(0)
    before = torch.get_rng_state()

    check_model_settings(settings)

    assert torch.equal(torch.get_rng_state(), before)
