"""Sweeps through Hydra: the fix/break groups, a real multirun, and failures inside a sweep."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from train_config import TINY, compose_train
from volreg.schema import register_schemas
from volreg.settings_catalog import SETTINGS
from volreg.train import CONFIG_DIR, run

REPOSITORY = Path(__file__).resolve().parents[1]
BASES = {"fix": ("pytorch_default", "keras"), "break": ("keras_faithful", "port")}


def options(group):
    return sorted(path.stem for path in (Path(CONFIG_DIR) / group).glob("*.yaml"))


def compose_flat(overrides):
    """Compose train.yaml without resolving and flatten it to {dotted.key: value}."""
    register_schemas()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    return flatten(OmegaConf.to_container(cfg, resolve=False))


def flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def changed_keys(base, other):
    return {key for key in base.keys() | other.keys() if base.get(key) != other.get(key)}


def multirun(tmp_path, overrides, check=False):
    command = [
        sys.executable,
        "train.py",
        "-m",
        *TINY,
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        f"data.cache_dir={tmp_path / 'cache'}",
        *overrides,
    ]
    result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def job_metrics(sweep):
    return {
        int(path.parent.name): json.loads(path.read_text())
        for path in sorted(sweep.glob("*/metrics.json"))
    }


def test_fix_and_break_have_one_option_per_setting():
    names = sorted(setting.name for setting in SETTINGS)

    assert options("fix") == sorted([*names, "none"])
    assert options("break") == sorted([*names, "none"])


@pytest.mark.parametrize("group", ["fix", "break"])
def test_each_option_changes_only_its_key(group):
    model, direction = BASES[group]
    base = compose_flat([f"model={model}"])

    for setting in SETTINGS:
        changed = compose_flat([f"model={model}", f"{group}={setting.name}"])
        assert changed_keys(base, changed) == {setting.key}, setting.name
        assert changed[setting.key] == getattr(setting, direction), setting.name
    assert changed_keys(base, compose_flat([f"model={model}", f"{group}=none"])) == set()


@pytest.mark.parametrize("group", ["fix", "break"])
def test_option_is_no_op_on_other_variant(group):
    # fix moves toward Keras, which keras_faithful already is, and break toward the port.
    other = "keras_faithful" if group == "fix" else "pytorch_default"
    base = compose_flat([f"model={other}"])

    for setting in SETTINGS:
        changed = compose_flat([f"model={other}", f"{group}={setting.name}"])
        assert changed_keys(base, changed) == set(), setting.name


def test_ablate_options_match_fix_and_break():
    for option in options("ablate"):
        group, _, setting = option.partition("_")
        model, _ = BASES[group]
        via_ablate = compose_flat([f"+ablate={option}"])
        direct = compose_flat([f"model={model}", f"{group}={setting}"])
        assert changed_keys(direct, via_ablate) == set(), option
    assert len(options("ablate")) == 2 * (len(SETTINGS) + 1)


def sweeper_params(experiment):
    register_schemas()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=True)
    return cfg.hydra.sweeper.params


def test_ablation_sweeps_every_option_and_seeds():
    params = sweeper_params("ablation")

    assert params["+ablate"] == "glob(*)"
    assert params["seed"] == "0,1"


def test_gap_sweeps_both_variants_and_three_seeds():
    params = sweeper_params("gap")

    assert set(params["model"].split(",")) == {"keras_faithful", "pytorch_default"}
    assert params["seed"] == "0,1,2"


def test_multirun_2x2_then_report(tmp_path):
    multirun(tmp_path, ["model=keras_faithful,pytorch_default", "seed=0,1"], check=True)
    sweep = tmp_path / "sweep"
    metrics = job_metrics(sweep)

    assert sorted(metrics) == [0, 1, 2, 3]
    assert all(record["status"] == "completed" for record in metrics.values())
    assert sorted(record["seed"] for record in metrics.values()) == [0, 0, 1, 1]
    assert (sweep / "multirun.yaml").is_file()

    report = subprocess.run(
        ["volreg-report", str(sweep)], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    assert "pytorch_default" in report.stdout
    for name in ("report.md", "report.csv", "curves.png", "effects.png"):
        assert (sweep / name).is_file(), name
    rows = (sweep / "report.csv").read_text().splitlines()
    assert len(rows) == 3  # the header and one row per model
    assert "model=pytorch_default" in (sweep / "report.md").read_text()


def test_failed_job_does_not_stop_sweep(tmp_path):
    result = multirun(tmp_path, ["data=files,grf", "data.files.path=/nonexistent/arrays.npz"])
    metrics = job_metrics(tmp_path / "sweep")

    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(metrics) == [0, 1]
    assert metrics[0]["status"] == "failed"
    assert "not found" in metrics[0]["error"]
    assert metrics[1]["status"] == "completed"


def test_stop_on_error_stops_sweep(tmp_path):
    result = multirun(
        tmp_path,
        ["data=files,grf", "data.files.path=/nonexistent/arrays.npz", "stop_on_error=true"],
    )
    metrics = job_metrics(tmp_path / "sweep")

    assert result.returncode != 0
    assert "stop_on_error=true" in result.stderr
    assert sorted(metrics) == [0]
    assert metrics[0]["status"] == "failed"
    assert not (tmp_path / "sweep" / "1").exists()


def test_single_run_failure_raises(tmp_path):
    cfg = compose_train(tmp_path, ["data=files", "data.files.path=/nonexistent/arrays.npz"])

    with pytest.raises(Exception, match="not found"):
        run(cfg)
    record = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert record["status"] == "failed"
