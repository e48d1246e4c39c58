"""volreg-report on crafted sweep directories: grouping, statistics, problem jobs and outputs."""

import csv
import json
import math
import subprocess
import sys

import pytest
import yaml

from volreg.report import find_jobs, group_jobs
from volreg.report.__main__ import main
from volreg.report.effects import keras_gap, setting_effects

# (job number, model, fix, break, seed, status, per-epoch val/mae); None: no metrics.json.
JOBS = [
    (0, "keras_faithful", "none", "none", 0, "completed", [0.20, 0.10]),
    (1, "keras_faithful", "none", "none", 1, "completed", [0.22, 0.12]),
    (2, "pytorch_default", "none", "none", 0, "completed", [0.30, 0.25]),
    (3, "pytorch_default", "none", "none", 1, "completed", [0.31, 0.27]),
    (4, "pytorch_default", "target_layout", "none", 0, "completed", [0.20, 0.11]),
    (5, "pytorch_default", "target_layout", "none", 1, "completed", [0.21, 0.13]),
    (6, "pytorch_default", "dropout", "none", 0, "completed", [0.28, 0.26]),
    (7, "pytorch_default", "dropout", "none", 1, "failed", [0.29]),
    (8, "keras_faithful", "none", "target_layout", 0, "completed", [0.30, 0.26]),
    (9, "keras_faithful", "none", "target_layout", 1, "diverged", [0.31, math.nan]),
    (10, "keras_faithful", "none", "dropout", 0, "completed", [0.21, 0.11]),
    (11, "keras_faithful", "none", "dropout", 1, None, [0.22]),
]
ERRORS = {
    "failed": "RuntimeError: out of memory",
    "diverged": "the training loss is nan at epoch 1",
}


def write_job(root, number, model, fix, break_, seed, status, val_mae):
    job = root / str(number)
    (job / ".hydra").mkdir(parents=True)
    overrides = [f"model={model}", f"fix={fix}", f"break={break_}", f"seed={seed}"]
    (job / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    choices = {
        "model": model,
        "fix": fix,
        "break": break_,
        "data": "grf",
        "hydra/launcher": "basic",
    }
    (job / ".hydra" / "hydra.yaml").write_text(
        yaml.safe_dump({"hydra": {"runtime": {"choices": choices}}})
    )

    (job / "csv").mkdir()
    with open(job / "csv" / "metrics.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", "step", "train/loss", "val/loss", "val/mae"])
        for epoch, value in enumerate(val_mae):
            writer.writerow([epoch, 10 * epoch + 9, 0.5, "", ""])
            writer.writerow([epoch, 10 * epoch + 9, "", value, value])

    if status is None:
        return
    finite = [value for value in val_mae if math.isfinite(value)]
    record = {
        "status": status,
        "error": ERRORS.get(status),
        "best_val_loss": min(finite),
        "best_epoch": val_mae.index(min(finite)),
        "epochs_run": len(val_mae),
        "wall_time_s": 1.0,
        "overrides": overrides,
        "seed": seed,
    }
    (job / "metrics.json").write_text(json.dumps(record))


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for job in JOBS:
        write_job(root, *job)
    return root


def variant_by_label(variants, label):
    matches = [variant for variant in variants if variant.label == label]
    assert len(matches) == 1, [variant.label for variant in variants]
    return matches[0]


def test_jobs_are_read_in_number_order(sweep):
    jobs = find_jobs(sweep)

    assert [int(job.path.name) for job in jobs] == list(range(12))
    assert jobs[11].status == "unfinished"
    assert "no metrics.json" in jobs[11].error
    assert jobs[11].seed == 1
    assert jobs[4].val_l1 == [(0, 0.20), (1, 0.11)]


def test_grouping_drops_seed_and_shared_overrides(sweep):
    variants = group_jobs(find_jobs(sweep))

    assert len(variants) == 6
    unchanged = variant_by_label(variants, "model=pytorch_default fix=none break=none")
    assert [job.seed for job in unchanged.jobs] == [0, 1]
    assert unchanged.mean == pytest.approx(0.26)
    assert unchanged.std == pytest.approx(math.sqrt(2) * 0.01)


def test_baselines_and_deltas(sweep):
    variants = group_jobs(find_jobs(sweep))
    keras = variant_by_label(variants, "model=keras_faithful fix=none break=none")
    port = variant_by_label(variants, "model=pytorch_default fix=none break=none")
    fixed = variant_by_label(variants, "model=pytorch_default fix=target_layout break=none")
    broken = variant_by_label(variants, "model=keras_faithful fix=none break=target_layout")

    assert keras.baseline is None
    assert port.baseline is keras
    assert fixed.baseline is port
    assert broken.baseline is keras
    assert port.delta() == pytest.approx(0.26 - 0.11)
    assert fixed.delta() == pytest.approx(0.12 - 0.26)
    assert keras_gap(variants) == pytest.approx(0.15)


def test_problem_jobs_are_excluded_from_statistics(sweep):
    variants = group_jobs(find_jobs(sweep))
    broken = variant_by_label(variants, "model=keras_faithful fix=none break=target_layout")
    dropout = variant_by_label(variants, "model=pytorch_default fix=dropout break=none")

    assert broken.values == [0.26]
    assert broken.std is None
    assert broken.status_counts() == {"completed": 1, "diverged": 1}
    assert dropout.status_counts() == {"completed": 1, "failed": 1}


def test_target_layout_ranks_first(sweep):
    effects = setting_effects(group_jobs(find_jobs(sweep)))

    assert [effect.setting for effect in effects] == ["target_layout", "dropout"]
    assert effects[0].fix.delta == pytest.approx(-0.14)
    assert effects[0].break_.delta == pytest.approx(0.26 - 0.11)


def test_report_files_list_problem_jobs(sweep, tmp_path, capsys):
    out = tmp_path / "report"

    assert main([str(sweep), "--out", str(out)]) == 0

    report = (out / "report.md").read_text()
    assert "Decisive setting: **`target_layout`**" in report
    assert "RuntimeError: out of memory" in report
    assert "the training loss is nan at epoch 1" in report
    assert "unfinished" in report
    assert "`dropout`:" in report
    for name in ("curves.png", "effects.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    with open(out / "report.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert rows[0]["variant"] == "model=keras_faithful fix=none break=none"
    assert "3 job(s) did not complete" in capsys.readouterr().out


def test_unreadable_metrics_json_is_unfinished(sweep):
    (sweep / "0" / "metrics.json").write_text("{not json")
    job = find_jobs(sweep)[0]

    assert job.status == "unfinished"
    assert "unreadable" in job.error


def test_single_run_directory(sweep, tmp_path):
    out = tmp_path / "single"

    assert main([str(sweep / "4"), "--out", str(out)]) == 0
    assert "(as configured)" in (out / "report.md").read_text()


def test_missing_directory_fails_clearly(tmp_path, capsys):
    assert main([str(tmp_path / "nope")]) == 2
    assert "directory not found" in capsys.readouterr().err


def test_directory_without_runs_fails_clearly(tmp_path, capsys):
    (tmp_path / "empty" / "logs").mkdir(parents=True)

    assert main([str(tmp_path / "empty")]) == 2
    assert "no runs found" in capsys.readouterr().err


def test_tensorboard_fallback(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    job = tmp_path / "run"
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("[]\n")
    writer = SummaryWriter(str(job / "tensorboard"))
    for epoch, (step, value) in enumerate([(9, 0.3), (19, 0.2)]):
        writer.add_scalar("epoch", epoch, step)
        writer.add_scalar("val/mae", value, step)
    writer.close()

    [read] = find_jobs(job)
    assert read.val_l1 == [(0, pytest.approx(0.3)), (1, pytest.approx(0.2))]


def test_module_entry_point(sweep, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "volreg.report", str(sweep), "--out", str(tmp_path / "m")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "target_layout" in result.stdout


def test_error_pairs_jobs_by_seed(sweep):
    variants = group_jobs(find_jobs(sweep))
    fixed = variant_by_label(variants, "model=pytorch_default fix=target_layout break=none")

    # Differences per seed: 0.11 - 0.25 and 0.13 - 0.27, both -0.14, so no spread at all.
    assert fixed.delta_error() == pytest.approx(0.0, abs=1e-12)
