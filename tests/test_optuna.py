"""hparams_search=optuna: the search space, a study continued after a stop, and the report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser

from train_config import TINY, compose_train
from volreg.schema import register_schemas
from volreg.train import CONFIG_DIR

REPOSITORY = Path(__file__).resolve().parents[1]
SEARCHED = {
    "model.optimizer.lr",
    "model.net.dropout_rate",
    "model.net.bn_momentum",
    "model.net.widths",
}


def search_config(tmp_path):
    """Compose hparams_search=optuna with the hydra node, as the sweeper receives it."""
    register_schemas()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(
            "train",
            overrides=["hparams_search=optuna", f"paths.root_dir={tmp_path}"],
            return_hydra_config=True,
        )
    return cfg.hydra.sweeper


def test_search_composes_without_plugin(tmp_path):
    sweeper = search_config(tmp_path)

    assert sweeper._target_.endswith("OptunaSweeper")
    assert sweeper.direction == "minimize"
    assert set(sweeper.params) == SEARCHED
    assert sweeper.storage == f"sqlite:///{tmp_path}/outputs/optuna/volreg.db"


def test_every_width_choice_composes(tmp_path):
    sweeper = search_config(tmp_path)
    override = OverridesParser.create().parse_override(
        f"model.net.widths={sweeper.params['model.net.widths']}"
    )
    choices = list(override.sweep_iterator())

    assert len(choices) == 4
    for choice in choices:
        cfg = compose_train(tmp_path, [f"model.net.widths={choice}"])
        assert len(cfg.model.net.widths) == 3, choice


@pytest.mark.parametrize("key", sorted(SEARCHED - {"model.net.widths"}))
def test_searched_ranges_compose(tmp_path, key):
    sweeper = search_config(tmp_path)
    override = OverridesParser.create().parse_override(f"{key}={sweeper.params[key]}")
    interval = override.value()

    for value in (interval.start, interval.end):
        cfg = compose_train(tmp_path, [f"{key}={value}"])
        assert cfg.model is not None


def search(tmp_path, name, trials):
    """Run the search with `trials` more trials at tiny sizes into sweeps/<name>."""
    command = [
        sys.executable,
        "train.py",
        "-m",
        "hparams_search=optuna",
        *TINY,
        f"hydra.sweeper.n_trials={trials}",
        "hydra.sweeper.sampler.n_startup_trials=2",
        f"paths.root_dir={tmp_path}",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"hydra.sweep.dir={tmp_path / 'sweeps' / name}",
    ]
    result = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp_path / "sweeps" / name


@pytest.mark.slow
def test_search_continues_study_and_report_reads_it(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper")
    optuna = pytest.importorskip("optuna")

    first = search(tmp_path, "first", trials=2)
    second = search(tmp_path, "second", trials=1)

    storage = f"sqlite:///{tmp_path}/outputs/optuna/volreg.db"
    study = optuna.load_study(study_name="volreg", storage=storage)
    assert len(study.trials) == 3
    assert all(trial.state.name == "COMPLETE" for trial in study.trials)

    returned = []
    for job in [*first.glob("*/metrics.json"), *second.glob("*/metrics.json")]:
        record = json.loads(job.read_text())
        assert record["status"] == "completed"
        returned.append(record["best_val_loss"])
    assert sorted(trial.value for trial in study.trials) == pytest.approx(sorted(returned))
    assert (second / "optimization_results.yaml").is_file()

    report = subprocess.run(
        ["volreg-report", str(tmp_path / "sweeps")], capture_output=True, text=True, timeout=120
    )
    assert report.returncode == 0, report.stderr
    rows = (tmp_path / "sweeps" / "report.csv").read_text().splitlines()
    assert len(rows) == 4  # the header and one row per trial
    assert "model.optimizer.lr=" in report.stdout
