"""Group jobs into variants (their overrides minus the seed) and compare each with its baseline."""

import math
import statistics
from dataclasses import dataclass, field

from volreg.report.runs import Job

# Overrides that do not define a variant: runs that differ only in these are repeats.
REPEAT_KEYS = ("seed",)
# Groups that move single settings (conf/fix, conf/break). A variant that changes one of them
# is compared with the same model and no change; conf/ablate only selects model and change.
CHANGE_GROUPS = ("fix", "break")
SELECTOR_GROUPS = ("ablate",)
# The model variants without a change are compared with this one: the gap to Keras.
REFERENCE_MODEL = "keras_faithful"


@dataclass
class Variant:
    """The jobs that share every override but the seed."""

    overrides: tuple[str, ...]
    jobs: list[Job]
    label: str = ""
    baseline: "Variant | None" = None
    values: list[float] = field(default_factory=list)

    @property
    def model(self) -> str | None:
        return self.jobs[0].choices.get("model")

    @property
    def change(self) -> str | None:
        """``fix=<setting>`` or ``break=<setting>``, or None for the model as configured."""
        for group in CHANGE_GROUPS:
            option = self.jobs[0].choices.get(group)
            if option not in (None, "none"):
                return f"{group}={option}"
        return None

    @property
    def completed(self) -> list[Job]:
        return [job for job in self.jobs if job.status == "completed"]

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        """The sample standard deviation over seeds; None with fewer than two values."""
        return statistics.stdev(self.values) if len(self.values) > 1 else None

    @property
    def mean_epochs(self) -> float | None:
        epochs = [job.epochs_run for job in self.completed if job.epochs_run is not None]
        return statistics.fmean(epochs) if epochs else None

    def status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for job in self.jobs:
            counts[job.status] = counts.get(job.status, 0) + 1
        return counts

    def seed_values(self) -> dict[int | None, float]:
        """Best val L1 of each completed job by its seed."""
        return {
            job.seed: value
            for job in self.completed
            if (value := job.best_val_l1) is not None and math.isfinite(value)
        }

    def delta(self) -> float | None:
        """Mean best val L1 minus the baseline's."""
        if self.baseline is None or self.mean is None or self.baseline.mean is None:
            return None
        return self.mean - self.baseline.mean

    def paired_differences(self) -> list[float] | None:
        """Per-seed differences to the baseline, when both ran the same two or more seeds.

        Jobs with the same seed share the data order and the random streams, so pairing them
        removes most of the seed-to-seed spread from the comparison.
        """
        if self.baseline is None:
            return None
        mine, theirs = self.seed_values(), self.baseline.seed_values()
        complete = len(mine) == len(self.values) and len(theirs) == len(self.baseline.values)
        if complete and len(mine) > 1 and mine.keys() == theirs.keys() and None not in mine:
            return [mine[seed] - theirs[seed] for seed in mine]
        return None

    def delta_error(self) -> float | None:
        """Standard error of delta: from the per-seed differences when the seeds pair up,
        else from both variants' spreads as independent samples."""
        differences = self.paired_differences()
        if differences is not None:
            return statistics.stdev(differences) / math.sqrt(len(differences))
        if self.baseline is None or self.std is None or self.baseline.std is None:
            return None
        return math.sqrt(
            self.std**2 / len(self.values) + self.baseline.std**2 / len(self.baseline.values)
        )

    def delta_dof(self) -> int | None:
        """Degrees of freedom of delta_error; the smaller sample's for unpaired variants, which
        is conservative."""
        differences = self.paired_differences()
        if differences is not None:
            return len(differences) - 1
        if self.delta_error() is None:
            return None
        return min(len(self.values), len(self.baseline.values)) - 1


def variant_key(job: Job) -> tuple[str, ...]:
    return tuple(
        sorted(
            override
            for override in job.overrides
            if override.partition("=")[0].lstrip("+~") not in REPEAT_KEYS
        )
    )


def group_jobs(jobs: list[Job]) -> list[Variant]:
    """Group jobs by overrides minus the seed, label the variants and find their baselines."""
    if not jobs:
        return []
    groups: dict[tuple[str, ...], list[Job]] = {}
    for job in jobs:
        groups.setdefault(variant_key(job), []).append(job)
    variants = [Variant(overrides=key, jobs=members) for key, members in groups.items()]

    # Overrides shared by every variant (sizes, paths) do not tell the variants apart.
    shared = set.intersection(*(set(variant.overrides) for variant in variants))
    for variant in variants:
        # In the order given on the command line, which the sorted key has lost.
        varying = [
            override.lstrip("+")
            for override in variant.jobs[0].overrides
            if override in variant.overrides and override not in shared
        ]
        variant.label = " ".join(varying) or "(as configured)"
        variant.values = [
            value
            for job in variant.completed
            if (value := job.best_val_l1) is not None and math.isfinite(value)
        ]
    for variant in variants:
        variant.baseline = find_baseline(variant, variants)
    return variants


def find_baseline(variant: Variant, variants: list[Variant]) -> Variant | None:
    """Return the variant to compare with, or None.

    A variant that changes one setting (fix=X or break=X) is compared with the same model and
    no change. A model without a change is compared with the Keras-faithful model. Other
    overrides, those that are not group choices of model, fix, break or ablate, must match.
    """
    if variant.model is None:
        return None
    if variant.change is not None:
        baseline_model = variant.model
    elif variant.model != REFERENCE_MODEL:
        baseline_model = REFERENCE_MODEL
    else:
        return None
    for candidate in variants:
        if (
            candidate is not variant
            and candidate.model == baseline_model
            and candidate.change is None
            and _context(candidate) == _context(variant)
        ):
            return candidate
    return None


def _context(variant: Variant) -> tuple:
    """Return the choices and overrides apart from those that pick the model and its change."""
    ignored = {"model", *CHANGE_GROUPS, *SELECTOR_GROUPS}
    choices = tuple(
        sorted(
            (group, str(option))
            for group, option in variant.jobs[0].choices.items()
            if group not in ignored
        )
    )
    overrides = tuple(
        override
        for override in variant.overrides
        if override.partition("=")[0].lstrip("+~") not in ignored
    )
    return choices, overrides
