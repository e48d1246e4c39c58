"""Sweeps through Hydra's launcher plugins, and the torch threads each job gets."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict, read_write

from train_config import TINY
from volreg.distributed import resolve_threads, set_threads
from volreg.schema import register_schemas
from volreg.train import CONFIG_DIR

REPOSITORY = Path(__file__).resolve().parents[1]
CPUS = len(os.sched_getaffinity(0))
JOBLIB = "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"
SUBMITIT_LOCAL = "hydra_plugins.hydra_submitit_launcher.submitit_launcher.LocalLauncher"


@pytest.fixture
def in_sweep():
    """Return a function that makes HydraConfig describe a multirun job under a launcher."""
    previous = HydraConfig.instance().cfg
    register_schemas()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", return_hydra_config=True)

    def set_launcher(launcher, mode="MULTIRUN"):
        with read_write(cfg.hydra), open_dict(cfg.hydra):
            cfg.hydra.mode = mode
            cfg.hydra.launcher = OmegaConf.create(launcher)
        HydraConfig.instance().set_config(cfg)

    yield set_launcher
    HydraConfig.instance().cfg = previous


def sweep(tmp_path, launcher_overrides):
    """Run a 2-job seed sweep at tiny sizes and return the sweep directory."""
    sweep_dir = tmp_path / "sweep"
    command = [
        sys.executable,
        "train.py",
        "-m",
        *TINY,
        "seed=0,1",
        f"paths.root_dir={tmp_path}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={sweep_dir}",
        *launcher_overrides,
    ]
    result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return sweep_dir


def check_sweep_and_report(sweep_dir):
    metrics = {
        int(path.parent.name): json.loads(path.read_text())
        for path in sweep_dir.glob("*/metrics.json")
    }
    assert sorted(metrics) == [0, 1]
    assert [metrics[job]["status"] for job in (0, 1)] == ["completed", "completed"]
    assert [metrics[job]["seed"] for job in (0, 1)] == [0, 1]

    report = subprocess.run(
        ["volreg-report", str(sweep_dir)], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    assert "2 completed" in report.stdout
    assert (sweep_dir / "report.csv").is_file()


def test_threads_integer_and_null():
    assert resolve_threads(3) == 3
    assert resolve_threads(None) is None


@pytest.mark.parametrize("setting", ["many", 0, -2, True, 1.5])
def test_threads_rejects_invalid(setting):
    with pytest.raises(ValueError, match="positive integer, auto or null"):
        resolve_threads(setting)


def test_threads_auto_divides_cpus_among_joblib_jobs(in_sweep):
    in_sweep({"_target_": JOBLIB, "n_jobs": 2})
    assert resolve_threads("auto") == max(1, CPUS // 2)

    in_sweep({"_target_": JOBLIB, "n_jobs": -1})
    assert resolve_threads("auto") == 1


def test_threads_auto_follows_cpus_per_task(in_sweep):
    in_sweep({"_target_": SUBMITIT_LOCAL, "cpus_per_task": 3})
    assert resolve_threads("auto") == 3

    in_sweep({"_target_": SUBMITIT_LOCAL, "cpus_per_task": None})
    assert resolve_threads("auto") is None


def test_threads_auto_keeps_default_in_single_run(in_sweep):
    in_sweep({"_target_": JOBLIB, "n_jobs": 2}, mode="RUN")

    assert resolve_threads("auto") is None


def test_set_threads_sets_torch_and_environment(monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "0")
    before = torch.get_num_threads()
    try:
        set_threads(1)
        assert torch.get_num_threads() == 1
        assert os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)


def test_slurm_preset_sets_documented_fields():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    register_schemas()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu"],
            return_hydra_config=True,
        )
    launcher = cfg.hydra.launcher

    assert launcher._target_.endswith("SlurmLauncher")
    assert launcher.partition == "gpu"
    for field in ("timeout_min", "gpus_per_node", "tasks_per_node", "cpus_per_task", "mem_gb"):
        assert launcher[field] is not None, field


@pytest.mark.slow
def test_joblib_sweep_then_report(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep_dir = sweep(tmp_path, ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])

    check_sweep_and_report(sweep_dir)
    log = (sweep_dir / "0" / "train.log").read_text()
    assert f"{max(1, CPUS // 2)} torch thread(s) per process" in log


@pytest.mark.slow
def test_submitit_local_sweep_then_report(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    sweep_dir = sweep(
        tmp_path,
        [
            "hydra/launcher=submitit_local",
            "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.timeout_min=10",
        ],
    )

    check_sweep_and_report(sweep_dir)
    assert (sweep_dir / ".submitit").is_dir()
    log = (sweep_dir / "1" / "train.log").read_text()
    assert "1 torch thread(s) per process" in log
