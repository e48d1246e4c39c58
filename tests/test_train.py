"""The main job end to end at tiny sizes: outputs, logs, resume and divergence."""

import csv
import json
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from train_config import TINY, compose_train
from volreg.train import run

VARIANTS = ["keras_faithful", "pytorch_default"]
REPO = Path(__file__).resolve().parents[1]


def train(tmp_path, overrides=()):
    cfg = compose_train(tmp_path, list(overrides))
    best = run(cfg)
    return best, tmp_path / "run"


def read_metrics(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def csv_rows(run_dir):
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def final_weights(run_dir):
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    return {
        name: value for name, value in checkpoint["state_dict"].items() if name.startswith("net.")
    }


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """One 2-epoch keras_faithful run shared by the output checks."""
    tmp_path = tmp_path_factory.mktemp("finished")
    best, run_dir = train(tmp_path)
    return best, run_dir


@pytest.mark.parametrize("variant", VARIANTS)
def test_fast_dev_run(tmp_path, variant):
    best, run_dir = train(tmp_path, [f"model={variant}", "debug=fdr"])

    metrics = read_metrics(run_dir)
    assert metrics["status"] == "completed"
    assert metrics["settings"]["net"]["dropout"] == (
        "element" if variant == "keras_faithful" else "channel"
    )
    assert math.isfinite(metrics["test"]["test/mae"])
    assert (run_dir / "predictions.npz").exists()


def test_metrics_json_contents(finished_run):
    best, run_dir = finished_run
    metrics = read_metrics(run_dir)
    val_losses = [float(row["val/loss"]) for row in csv_rows(run_dir) if row["val/loss"]]

    assert metrics["status"] == "completed"
    assert metrics["error"] is None
    assert metrics["epochs_run"] == 2
    assert len(val_losses) == 2
    assert metrics["best_val_loss"] == pytest.approx(min(val_losses))
    assert metrics["best_epoch"] == val_losses.index(min(val_losses))
    assert best == pytest.approx(metrics["best_val_loss"])
    assert set(metrics["test"]) >= {"test/loss", "test/mae", "test/mse", "test/r2"}
    assert metrics["train_samples_per_s"] > 0
    assert metrics["speed_settings"]["precision"] == "32-true"
    assert metrics["speed_settings"]["device"] == "cpu"
    assert metrics["speed_settings"]["processes"] == 1
    assert metrics["speed_settings"]["batch_size_per_process"] == 16
    assert metrics["speed_settings"]["threads_per_process"] >= 1
    assert metrics["speed_settings"]["keep_freed_memory"] is True
    assert metrics["speed_settings"]["tf32"] is False
    assert metrics["wall_time_s"] > 0
    assert metrics["settings"]["net"]["init"] == "keras"
    assert metrics["settings"]["optimizer"]["_target_"] == "volreg.optim.KerasAdam"
    assert metrics["seed"] == 0
    assert metrics["tags"] == ["dev"]


def test_train_loss_is_logged_per_epoch(finished_run):
    _, run_dir = finished_run
    train_losses = [row["train/loss"] for row in csv_rows(run_dir) if row["train/loss"]]

    assert len(train_losses) == 2


def test_tensorboard_has_hparams_and_val_loss(finished_run):
    _, run_dir = finished_run
    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()

    assert len(events.Scalars("val/loss")) == 2
    assert events.Scalars("hp/best_val_loss")[0].value == pytest.approx(
        read_metrics(run_dir)["best_val_loss"]
    )
    assert "pred_vs_true" in events.Tags()["images"]

    content = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    session = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info
    assert session.hparams["model/net/dropout"].string_value == "element"
    assert session.hparams["model/optimizer/lr"].number_value == pytest.approx(1e-3)


def test_prediction_plot_and_file(finished_run):
    _, run_dir = finished_run
    import numpy as np

    predictions = np.load(run_dir / "predictions.npz")
    assert predictions["prediction"].shape == predictions["target"].shape == (32, 1)
    assert (run_dir / "pred_vs_true.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (run_dir / "config.yaml").exists()


def test_resume_matches_uninterrupted(tmp_path):
    deterministic = ["trainer.deterministic=true"]
    _, straight = train(tmp_path / "straight", [*deterministic, "trainer.max_epochs=4"])
    _, first = train(tmp_path / "first", [*deterministic, "trainer.max_epochs=2"])
    resume_from = first / "checkpoints" / "last.ckpt"
    _, resumed = train(
        tmp_path / "resumed", [*deterministic, "trainer.max_epochs=4", f"ckpt_path={resume_from}"]
    )

    straight_weights, resumed_weights = final_weights(straight), final_weights(resumed)
    assert read_metrics(resumed)["epochs_run"] == 4
    for name, value in straight_weights.items():
        torch.testing.assert_close(
            resumed_weights[name], value, atol=0, rtol=0, msg=lambda m, name=name: f"{name}: {m}"
        )


def test_resume_with_missing_best_checkpoint_tests(tmp_path):
    # A run stopped while it wrote its best checkpoint leaves a last.ckpt that names a best
    # file that is not there. Resuming it with no epochs left must still test and finish.
    _, first = train(tmp_path / "first", ["trainer.max_epochs=2"])
    for path in (first / "checkpoints").glob("epoch_*.ckpt"):
        path.unlink()
    resume_from = first / "checkpoints" / "last.ckpt"

    _, resumed = train(tmp_path / "resumed", ["trainer.max_epochs=2", f"ckpt_path={resume_from}"])

    metrics = read_metrics(resumed)
    assert metrics["status"] == "completed"
    assert metrics["test"]["test/loss"] > 0


def test_non_finite_loss_ends_as_diverged(tmp_path):
    # At lr 1e6 the first epoch still ends finite, the second produces NaN (measured with the
    # per-tensor update; the fused one stays finite longer).
    overrides = [
        "model.optimizer.lr=1e6",
        "model.optimizer.fused=false",
        "trainer.max_epochs=4",
        "trainer.limit_train_batches=2",
    ]
    with pytest.raises(SystemExit) as exit_info:
        train(tmp_path, overrides)
    run_dir = tmp_path / "run"
    metrics = read_metrics(run_dir)

    assert metrics["status"] == "diverged"
    assert "epoch 1" in metrics["error"]
    assert "model.optimizer.lr" in metrics["error"]
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 0
    assert all(
        torch.isfinite(value).all()
        for value in checkpoint["state_dict"].values()
        if value.is_floating_point()
    )
    assert exit_info.value.code == 1
    assert math.isfinite(metrics["best_val_loss"])


def test_epoch_summary_logs_current_losses(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="volreg.callbacks")
    _, run_dir = train(tmp_path)
    train_losses = [float(row["train/loss"]) for row in csv_rows(run_dir) if row["train/loss"]]

    lines = [record.getMessage() for record in caplog.records if "epoch " in record.getMessage()]
    assert len(lines) == 2
    assert lines[0].startswith(f"epoch 1/2: train/loss {train_losses[0]:.4f}, val/loss ")
    assert lines[1].startswith(f"epoch 2/2: train/loss {train_losses[1]:.4f}, val/loss ")


def signal_train(tmp_path, overrides, marker, signal_number):
    """Run train.py in a subprocess, send ``signal_number`` once it logs ``marker``, and
    return the process (ended) and its output."""
    command = [
        sys.executable,
        str(REPO / "train.py"),
        *TINY,
        *overrides,
        f"hydra.run.dir={tmp_path / 'run'}",
        f"data.cache_dir={tmp_path / 'cache'}",
    ]
    environment = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        command,
        cwd=REPO,
        stdout=subprocess.PIPE,
        env=environment,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output = []
    for line in process.stdout:
        output.append(line)
        if marker in line:
            break
    process.send_signal(signal_number)
    output.append(process.communicate(timeout=120)[0])
    return process, "".join(output)


@pytest.mark.parametrize(
    "signal_number", [signal.SIGINT, signal.SIGTERM], ids=["ctrl_c", "sigterm"]
)
def test_interrupt_leaves_resumable_checkpoint(tmp_path, signal_number):
    run_dir = tmp_path / "run"
    process, output = signal_train(
        tmp_path, ["trainer.max_epochs=1000"], "epoch 2/1000", signal_number
    )

    metrics = read_metrics(run_dir)
    assert process.returncode != 0, output[-3000:]
    assert metrics["status"] == "interrupted"
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] >= 1
    best, resumed = train(
        tmp_path / "resumed",
        [
            f"ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}",
            f"trainer.max_epochs={checkpoint['epoch'] + 1}",
        ],
    )
    assert read_metrics(resumed)["status"] == "completed"


def test_last_checkpoint_is_the_final_epoch(tmp_path):
    # At lr 0 only BatchNorm's running statistics move, so val/loss barely changes and the
    # best checkpoint lags behind, while last.ckpt must still follow every epoch.
    _, run_dir = train(tmp_path, ["model.optimizer.lr=0", "trainer.max_epochs=3"])

    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    assert read_metrics(run_dir)["epochs_run"] == 3


def test_sigterm_while_building_data_is_recorded(tmp_path):
    # 20,000 volumes of 16³ take seconds to generate, so the signal arrives before fit.
    overrides = ["data.grf.shape=[16,16,16]", "data.grf.n_train=20000"]
    process, output = signal_train(tmp_path, overrides, "building the data module", signal.SIGTERM)

    run_dir = tmp_path / "run"
    metrics = read_metrics(run_dir)
    assert process.returncode == 128 + signal.SIGTERM, output[-3000:]
    assert metrics["status"] == "interrupted"
    assert not (run_dir / "checkpoints").exists()
