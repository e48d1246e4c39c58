"""The report as text: the variant table, the settings ranked by effect, problem jobs; CSV."""

import csv
from pathlib import Path

from volreg.report.runs import Job
from volreg.report.variants import Variant

CSV_COLUMNS = (
    "variant",
    "model",
    "change",
    "seeds",
    "best_val_l1_mean",
    "best_val_l1_std",
    "baseline",
    "change_vs_baseline",
    "change_vs_baseline_se",
    "mean_epochs",
    "statuses",
)


def format_value(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def format_mean_std(variant: Variant) -> str:
    if variant.mean is None:
        return "—"
    if variant.std is None:
        return f"{variant.mean:.4f}"
    return f"{variant.mean:.4f} ± {variant.std:.4f}"


def format_delta(variant: Variant) -> str:
    delta = variant.delta()
    if delta is None:
        return "—"
    text = f"{delta:+.4f}"
    if variant.baseline.mean:
        text += f" ({delta / variant.baseline.mean:+.0%})"
    return text


def format_statuses(variant: Variant) -> str:
    return ", ".join(
        f"{count} {status}" for status, count in sorted(variant.status_counts().items())
    )


def variant_table(variants: list[Variant]) -> str:
    """Return the variants as a Markdown table, best mean val L1 first."""
    lines = [
        "| variant | model | change | best val L1, mean ± std | vs baseline | baseline "
        "| epochs | runs |",
        "|---|---|---|---:|---:|---|---:|---|",
    ]
    for variant in sort_variants(variants):
        baseline = variant.baseline.label if variant.baseline is not None else "—"
        lines.append(
            f"| {variant.label} | {variant.model or '—'} | {variant.change or '—'} "
            f"| {format_mean_std(variant)} | {format_delta(variant)} | {baseline} "
            f"| {format_value(variant.mean_epochs, 1)} | {format_statuses(variant)} |"
        )
    return "\n".join(lines)


def sort_variants(variants: list[Variant]) -> list[Variant]:
    """Order by mean best val L1; variants without a value go last."""
    return sorted(variants, key=lambda variant: (variant.mean is None, variant.mean or 0.0))


def problem_jobs(variants: list[Variant]) -> list[Job]:
    return [job for variant in variants for job in variant.jobs if job.status != "completed"]


def problem_table(jobs: list[Job]) -> str:
    lines = ["| job | status | error |", "|---|---|---|"]
    for job in jobs:
        error = (job.error or "").replace("|", "\\|").replace("\n", " ")
        lines.append(f"| {job.path} | {job.status} | {error or '—'} |")
    return "\n".join(lines)


def write_csv(variants: list[Variant], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for variant in sort_variants(variants):
            writer.writerow(
                [
                    variant.label,
                    variant.model or "",
                    variant.change or "",
                    " ".join(str(job.seed) for job in variant.jobs),
                    _plain(variant.mean),
                    _plain(variant.std),
                    variant.baseline.label if variant.baseline is not None else "",
                    _plain(variant.delta()),
                    _plain(variant.delta_error()),
                    _plain(variant.mean_epochs),
                    format_statuses(variant),
                ]
            )


def _plain(value: float | None) -> str:
    return "" if value is None else repr(value)
