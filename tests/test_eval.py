"""The evaluation job on imported and trained checkpoints, and resuming an imported one."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from test_import_keras import build_model
from train_config import compose_train
from volreg.data.errors import ModelMismatchError
from volreg.evaluate import run as run_eval
from volreg.interop.checkpoint import import_keras_model, save_checkpoint
from volreg.schema import register_schemas
from volreg.train import CONFIG_DIR
from volreg.train import run as run_train

# 24 test samples make one full batch of 16 and one partial batch of 8.
SPLIT_SIZES = {"tr": 32, "val": 16, "te": 24}


def compose_eval(tmp_path, overrides):
    """Compose ``eval.yaml`` with ``overrides``; outputs go to tmp_path / "eval"."""
    register_schemas()
    paths = [
        f"paths.root_dir={tmp_path}",
        f"paths.output_dir={tmp_path / 'eval'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        "trainer.accelerator=cpu",
        "+trainer.enable_progress_bar=false",
    ]
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("eval", overrides=[*paths, *overrides], return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def write_arrays(path, channels_last, seed=2):
    """Write train, val and test arrays in the Keras script's keys; returns the arrays."""
    rng = np.random.default_rng(seed)
    shape = (8, 8, 8, 1) if channels_last else (1, 8, 8, 8)
    arrays = {}
    for split, count in SPLIT_SIZES.items():
        arrays[f"X{split}"] = rng.random((count, *shape), dtype=np.float32)
        arrays[f"Y{split}"] = rng.random((count, 1), dtype=np.float32)
    np.savez(path, **arrays)
    return arrays


@pytest.fixture(scope="module")
def imported(tmp_path_factory):
    """A channels_last Keras model, its imported checkpoint and an .npz data set."""
    directory = tmp_path_factory.mktemp("imported")
    model = build_model(channels_last=True, rate=0.0)
    model.save(directory / "model.keras")
    checkpoint = directory / "imported.ckpt"
    save_checkpoint(import_keras_model(directory / "model.keras").module, checkpoint)
    arrays = write_arrays(directory / "arrays.npz", channels_last=True)
    return model, checkpoint, directory / "arrays.npz", arrays


def test_eval_matches_keras_evaluate(tmp_path, imported):
    model, checkpoint, data_path, arrays = imported
    model.compile(loss="mae")
    keras_l1 = model.evaluate(arrays["Xte"], arrays["Yte"], batch_size=16, verbose=0)

    test = run_eval(
        compose_eval(
            tmp_path, [f"ckpt_path={checkpoint}", "data=files", f"data.files.path={data_path}"]
        )
    )

    assert test["test/mae"] == pytest.approx(keras_l1, abs=1e-5)
    assert test["test/loss"] == pytest.approx(keras_l1, abs=1e-5)


def test_eval_writes_outputs(tmp_path, imported):
    model, checkpoint, data_path, arrays = imported
    run_eval(
        compose_eval(
            tmp_path, [f"ckpt_path={checkpoint}", "data=files", f"data.files.path={data_path}"]
        )
    )
    run_dir = tmp_path / "eval"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    predictions = np.load(run_dir / "predictions.npz")
    assert metrics["status"] == "completed"
    assert metrics["ckpt_path"] == str(checkpoint)
    assert set(metrics["test"]) >= {"test/loss", "test/mae", "test/mse", "test/r2"}
    assert metrics["settings"]["net"]["widths"] == [4, 4, 8]
    np.testing.assert_allclose(predictions["target"], arrays["Yte"])
    np.testing.assert_allclose(
        predictions["prediction"], model.predict(arrays["Xte"], verbose=0), atol=1e-5, rtol=0
    )
    assert (run_dir / "pred_vs_true.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "config.yaml").exists()


def test_eval_rejects_other_volume_shape(tmp_path, imported):
    _, checkpoint, _, _ = imported
    cfg = compose_eval(tmp_path, [f"ckpt_path={checkpoint}", "data.grf.shape=[4,4,4]"])

    with pytest.raises(ModelMismatchError, match=r"\(1, 8, 8, 8\)"):
        run_eval(cfg)


def test_eval_requires_ckpt_path(tmp_path):
    cfg = compose_eval(tmp_path, [])

    with pytest.raises(ValueError, match="ckpt_path is required"):
        run_eval(cfg)


def test_eval_reproduces_training_test(tmp_path):
    train_cfg = compose_train(tmp_path / "train", ["trainer.max_epochs=1"])
    run_train(train_cfg)
    train_dir = tmp_path / "train" / "run"
    trained = json.loads((train_dir / "metrics.json").read_text())
    checkpoint = train_dir / "checkpoints" / "last.ckpt"
    # The same tiny GRF data as the training run, read from its cache.
    data = [
        "data.grf.shape=[8,8,8]",
        "data.grf.n_train=64",
        "data.grf.n_val=32",
        "data.grf.n_test=32",
        f"data.cache_dir={tmp_path / 'train' / 'cache'}",
    ]

    test = run_eval(compose_eval(tmp_path, [f"ckpt_path={checkpoint}", *data]))

    assert test["test/mae"] == pytest.approx(trained["test"]["test/mae"], abs=1e-6)
    assert (tmp_path / "eval" / "predictions.npz").exists()


def test_imported_checkpoint_resumes(tmp_path, imported):
    _, checkpoint, data_path, _ = imported
    net = [
        "model=keras_faithful",
        "model.net.widths=[4,4,8]",
        "model.net.head_widths=[16,8]",
        "model.net.dropout_rate=0.0",
        # lr 0 keeps the weights as imported, which shows that fit started from them.
        "model.optimizer.lr=0.0",
    ]
    data = ["data=files", f"data.files.path={data_path}"]
    cfg = compose_train(tmp_path, [*net, *data, "trainer.max_epochs=1", f"ckpt_path={checkpoint}"])

    run_train(cfg)

    run_dir = tmp_path / "run"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["epochs_run"] == 1
    resumed = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    original = torch.load(checkpoint, weights_only=True)["state_dict"]
    for name in ("net.blocks.0.conv.weight", "net.projections.1.weight", "net.output_layer.bias"):
        torch.testing.assert_close(resumed[name], original[name], atol=0, rtol=0)


def test_eval_requires_existing_checkpoint(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "eval.py",
            f"ckpt_path={tmp_path / 'missing.ckpt'}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=False,
    )

    assert result.returncode != 0
    assert "missing.ckpt not found" in result.stdout + result.stderr
