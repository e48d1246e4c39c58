"""DDP under Hydra: child process commands, rank-0 outputs, and metrics reduced across ranks."""

import csv
import json
import logging
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from lightning.fabric.plugins.environments import LightningEnvironment
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from omegaconf import open_dict, read_write

import volreg.distributed as distributed
from train_config import TINY, compose_train
from volreg.distributed import HydraDDPStrategy, HydraJobLauncher, child_command
from volreg.evaluation import load_module
from volreg.schema import register_schemas
from volreg.train import CONFIG_DIR, run

REPOSITORY = Path(__file__).resolve().parents[1]
# Dropout off and a fixed order, so that the runs are repeatable.
REPEATABLE = ["model.net.dropout_rate=0", "data.shuffle=false", "trainer.deterministic=true"]


def hydra_node(task, hydra_overrides, output_dir, mode="MULTIRUN"):
    """Compose train.yaml's hydra node as Hydra would set it for one job of a sweep."""
    register_schemas()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=task, return_hydra_config=True)
    node = cfg.hydra
    with read_write(node), open_dict(node):
        node.mode = mode
        node.runtime.output_dir = str(output_dir)
        node.overrides.hydra = hydra_overrides
    return node


def train_script(tmp_path, arguments, flags=()):
    """Run ``python train.py`` at tiny sizes with every output below tmp_path."""
    command = [
        sys.executable,
        "train.py",
        *flags,
        *TINY,
        f"paths.root_dir={tmp_path}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *arguments,
    ]
    return subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)


def val_rows(run_dir):
    with open(run_dir / "csv" / "metrics.csv", newline="") as handle:
        return [row for row in csv.DictReader(handle) if row["val/loss"]]


def test_child_command_is_single_run_of_job(tmp_path):
    task = ["seed=1", "model=pytorch_default"]
    hydra_overrides = [
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=2",
        "hydra.sweep.dir=/sweeps/today",
        "hydra.job.chdir=false",
        "hydra.mode=MULTIRUN",
    ]
    node = hydra_node(task, hydra_overrides, tmp_path / "sweep" / "3")

    command = child_command(node, "train_rank1")

    assert command[:3] == [sys.executable, "-m", "volreg.train"]
    assert "-m" not in command[3:]
    assert "--multirun" not in command
    assert "--config-name=train" in command
    assert f"--config-path={CONFIG_DIR}" in command
    assert command.index("seed=1") < command.index("model=pytorch_default")
    assert "hydra.job.chdir=false" in command
    for dropped in hydra_overrides[:3] + hydra_overrides[4:]:
        assert dropped not in command, dropped
    assert command[-3:] == [
        f"hydra.run.dir='{tmp_path / 'sweep' / '3'}'",
        "hydra.job.name=train_rank1",
        "hydra.output_subdir=null",
    ]


def test_child_run_dir_survives_quoting(tmp_path):
    output_dir = tmp_path / "a run, with 'quotes'"
    node = hydra_node([], [], output_dir, mode="RUN")
    overrides = [item for item in child_command(node, "train_rank1") if "=" in item]
    overrides = [item for item in overrides if not item.startswith("--")]

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        child = compose("train", overrides=overrides, return_hydra_config=True)

    assert child.hydra.run.dir == str(output_dir)
    assert child.hydra.output_subdir is None


def test_strategy_uses_hydra_launcher(monkeypatch):
    monkeypatch.setattr(distributed, "_children_started", False)
    strategy = HydraDDPStrategy(
        cluster_environment=LightningEnvironment(), parallel_devices=[torch.device("cpu")] * 2
    )

    strategy._configure_launcher()

    assert isinstance(strategy.launcher, HydraJobLauncher)


def test_second_ddp_job_in_process_fails(monkeypatch):
    monkeypatch.setattr(distributed, "_children_started", True)
    strategy = HydraDDPStrategy(
        cluster_environment=LightningEnvironment(), parallel_devices=[torch.device("cpu")] * 2
    )

    with pytest.raises(RuntimeError, match="submitit_local or submitit_slurm"):
        strategy._configure_launcher()


@pytest.mark.parametrize("option", ["ddp", "ddp_cpu"])
def test_ddp_options_build_hydra_strategy(tmp_path, option):
    cfg = compose_train(tmp_path, [f"trainer={option}"])
    strategy = instantiate(cfg.trainer.strategy)

    assert isinstance(strategy, HydraDDPStrategy)
    assert strategy.process_group_backend == ("gloo" if option == "ddp_cpu" else "nccl")
    assert cfg.trainer.sync_batchnorm is False


def test_other_ranks_write_no_files(tmp_path, monkeypatch):
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", root.level)  # run() quiets the root logger on rank 1
    cfg = compose_train(tmp_path, ["debug=fdr"])

    run(cfg)

    run_dir = tmp_path / "run"
    assert not (run_dir / "metrics.json").exists()
    assert not (run_dir / "config.yaml").exists()


@pytest.mark.slow
def test_ddp_cpu_run_writes_one_run_dir(tmp_path):
    run_dir = tmp_path / "run"
    result = train_script(tmp_path, ["trainer=ddp_cpu", f"hydra.run.dir={run_dir}", *REPEATABLE])

    assert result.returncode == 0, result.stderr[-3000:]
    # The default log_dir is tmp_path/outputs: a child that made its own run would create it.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["cache", "run"]
    assert list(tmp_path.rglob("metrics.json")) == [run_dir / "metrics.json"]
    assert (run_dir / "train_rank1.log").is_file()
    hydra_yaml = yaml.safe_load((run_dir / ".hydra" / "hydra.yaml").read_text())
    assert hydra_yaml["hydra"]["job"]["name"] == "train"

    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["epochs_run"] == 2
    assert set(metrics["test"]) >= {"test/loss", "test/mae", "test/mse", "test/r2"}
    assert len(val_rows(run_dir)) == 2
    # Rank 0 predicts the whole test split, not only its own half of the batches.
    assert np.load(run_dir / "predictions.npz")["prediction"].shape == (32, 1)


@pytest.mark.slow
def test_ddp_val_metrics_match_single_process(tmp_path):
    # Each of the 2 processes validates one of the 2 val batches (32 samples, batch 16).
    # The metric objects add up their states across processes, so the logged values must
    # equal a single process validating the same weights on the whole split.
    run_dir = tmp_path / "run"
    result = train_script(tmp_path, ["trainer=ddp_cpu", f"hydra.run.dir={run_dir}", *REPEATABLE])
    assert result.returncode == 0, result.stderr[-3000:]
    last_epoch = val_rows(run_dir)[-1]

    cfg = compose_train(tmp_path, REPEATABLE)
    datamodule = instantiate(cfg.data)
    datamodule.prepare_data()
    datamodule.setup("fit")
    module = load_module(run_dir / "checkpoints" / "last.ckpt")
    trainer = L.Trainer(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    [single] = trainer.validate(module, datamodule=datamodule)

    for name in ("val/loss", "val/mae", "val/mse", "val/r2"):
        assert single[name] == pytest.approx(float(last_epoch[name]), rel=1e-5), name


@pytest.mark.slow
def test_ddp_cpu_job_in_multirun_stays_in_sweep(tmp_path):
    result = train_script(tmp_path, ["trainer=ddp_cpu", "seed=0", *REPEATABLE], ["-m"])

    assert result.returncode == 0, result.stderr[-3000:]
    # A child that repeated `-m` would launch the sweep again, into a second multirun
    # directory when the clock has moved on by a second.
    output = result.stdout + result.stderr
    assert output.count("Launching 1 jobs locally") == 1
    sweeps = list((tmp_path / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1
    assert sorted(path.name for path in sweeps[0].iterdir() if path.is_dir()) == ["0"]
    job_dir = sweeps[0] / "0"
    assert (job_dir / "train_rank1.log").is_file()
    metrics = json.loads((job_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed"
    assert metrics["seed"] == 0
