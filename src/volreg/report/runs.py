"""Read the jobs of a sweep: metrics.json, the Hydra overrides and choices, per-epoch val L1."""

import csv
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

log = logging.getLogger(__name__)

# Status of a job directory that has Hydra's files but no metrics.json: the process died
# (killed, out of memory) before run() could write its record.
UNFINISHED = "unfinished"

# The per-epoch validation L1 in target units. val/loss is not used because with
# model.loss.target_layout=broadcast it is the broadcast (N, N) loss, not the samples' L1.
VAL_L1 = "val/mae"


class ReportError(Exception):
    """The directory to report on is missing or contains no runs."""


@dataclass
class Job:
    """One training run, read from its directory."""

    path: Path
    status: str
    error: str | None = None
    overrides: list[str] = field(default_factory=list)
    seed: int | None = None
    # Hydra's config group choices (model, fix, break, ...) from .hydra/hydra.yaml.
    choices: dict[str, str | None] = field(default_factory=dict)
    best_val_loss: float | None = None
    epochs_run: int | None = None
    wall_time_s: float | None = None
    # (epoch, val L1) for every validation run.
    val_l1: list[tuple[int, float]] = field(default_factory=list)

    @property
    def best_val_l1(self) -> float | None:
        """The lowest finite val L1 over the epochs, else metrics.json's best_val_loss."""
        finite = [value for _, value in self.val_l1 if math.isfinite(value)]
        if finite:
            return min(finite)
        return self.best_val_loss


def is_job_dir(path: Path) -> bool:
    return (path / "metrics.json").is_file() or (path / ".hydra" / "overrides.yaml").is_file()


def find_jobs(root: Path) -> list[Job]:
    """Read the job in ``root`` itself, or every job below it, in job-number order."""
    root = Path(root)
    if not root.exists():
        raise ReportError(f"directory not found: {root}. Pass a run or multirun directory.")
    if not root.is_dir():
        raise ReportError(f"not a directory: {root}. Pass a run or multirun directory.")
    if is_job_dir(root):
        return [read_job(root)]

    found = {path.parent for path in root.rglob("metrics.json")}
    found |= {path.parent.parent for path in root.rglob(".hydra/overrides.yaml")}
    # A job's own subdirectories (csv/, tensorboard/) never contain these files, so every
    # directory found here is one job.
    paths = sorted((path for path in found if path != root), key=_natural_key)
    if not paths:
        raise ReportError(
            f"no runs found in {root}: expected job directories containing metrics.json or "
            ".hydra/overrides.yaml, as `python train.py -m ...` writes them."
        )
    return [read_job(path) for path in paths]


def read_job(path: Path) -> Job:
    """Read one job directory; a missing or unreadable metrics.json makes it unfinished."""
    path = Path(path)
    job = Job(path=path, status=UNFINISHED)
    job.overrides = _read_yaml_list(path / ".hydra" / "overrides.yaml")
    job.choices = _read_choices(path / ".hydra" / "hydra.yaml")

    metrics_path = path / "metrics.json"
    if metrics_path.is_file():
        try:
            record = json.loads(metrics_path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            job.error = f"metrics.json is unreadable: {error}"
        else:
            _apply_record(job, record)
    else:
        job.error = "no metrics.json: the job stopped before it could record a result"

    if job.seed is None:
        job.seed = _seed_from(job.overrides)
    job.val_l1 = read_val_l1(path)
    return job


def _apply_record(job: Job, record: dict) -> None:
    job.status = str(record.get("status", UNFINISHED))
    job.error = record.get("error")
    job.overrides = list(record.get("overrides") or job.overrides)
    job.seed = record.get("seed")
    job.best_val_loss = record.get("best_val_loss")
    job.epochs_run = record.get("epochs_run")
    job.wall_time_s = record.get("wall_time_s")


def read_val_l1(path: Path) -> list[tuple[int, float]]:
    """Return (epoch, val L1) pairs from the CSV log, else from the TensorBoard events."""
    csv_path = path / "csv" / "metrics.csv"
    if csv_path.is_file():
        return _val_l1_from_csv(csv_path)
    events = path / "tensorboard"
    if events.is_dir() and any(events.glob("events.out.tfevents.*")):
        return _val_l1_from_tensorboard(events)
    return []


def _val_l1_from_csv(csv_path: Path) -> list[tuple[int, float]]:
    try:
        with open(csv_path, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, csv.Error) as error:
        log.warning("skipping unreadable %s: %s", csv_path, error)
        return []
    pairs = []
    for row in rows:
        value, epoch = row.get(VAL_L1), row.get("epoch")
        if value and epoch:
            pairs.append((int(float(epoch)), float(value)))
    return pairs


def _val_l1_from_tensorboard(events: Path) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(events), size_guidance={"scalars": 0})
    accumulator.Reload()
    tags = accumulator.Tags().get("scalars", [])
    if VAL_L1 not in tags:
        return []
    # Lightning logs scalars against the global step and logs the epoch as its own scalar.
    epoch_at_step = {}
    if "epoch" in tags:
        epoch_at_step = {event.step: int(event.value) for event in accumulator.Scalars("epoch")}
    return [
        (epoch_at_step.get(event.step, index), float(event.value))
        for index, event in enumerate(accumulator.Scalars(VAL_L1))
    ]


def _read_yaml_list(path: Path) -> list[str]:
    if not path.is_file():
        return []
    try:
        loaded = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        log.warning("skipping unreadable %s: %s", path, error)
        return []
    return [str(item) for item in loaded or []]


def _read_choices(path: Path) -> dict[str, str | None]:
    if not path.is_file():
        return {}
    try:
        loaded = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        log.warning("skipping unreadable %s: %s", path, error)
        return {}
    choices = loaded.get("hydra", {}).get("runtime", {}).get("choices", {}) or {}
    return {str(group): value for group, value in choices.items() if not group.startswith("hydra")}


def _seed_from(overrides: list[str]) -> int | None:
    for override in overrides:
        key, _, value = override.partition("=")
        if key.lstrip("+~") == "seed":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _natural_key(path: Path) -> list:
    """Sort 2 before 10 in job numbers."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", str(path))]
