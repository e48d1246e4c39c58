"""Assemble report.md from the variant table, the setting effects and the problem jobs."""

from pathlib import Path

from volreg.report.effects import describe, keras_gap, setting_effects
from volreg.report.runs import VAL_L1
from volreg.report.tables import problem_jobs, problem_table, variant_table
from volreg.report.variants import Variant


def render_report(variants: list[Variant], source: Path) -> str:
    jobs = [job for variant in variants for job in variant.jobs]
    sections = [
        f"# Sweep report: {source}",
        f"{len(jobs)} jobs in {len(variants)} variants (jobs grouped by their overrides minus "
        "the seed). Best val L1 is each job's lowest per-epoch "
        f"`{VAL_L1}`, the mean absolute error in target units; mean ± sample std over the "
        "completed seeds. A change (fix=X or break=X) is compared with the same model "
        "unchanged, and the unchanged PyTorch port with the unchanged Keras-faithful model.",
        "## Variants",
        variant_table(variants),
    ]
    sections += settings_section(variants)
    problems = problem_jobs(variants)
    sections += ["## Jobs that did not complete"]
    sections += [problem_table(problems) if problems else "None: every job completed."]
    return "\n\n".join(sections) + "\n"


def settings_section(variants: list[Variant]) -> list[str]:
    effects = setting_effects(variants)
    if not effects:
        return []
    gap = keras_gap(variants)
    lines = ["## Settings ranked by effect"]
    if gap is not None:
        lines.append(
            f"The unchanged PyTorch port ends {gap:+.4f} val L1 from the unchanged Keras-faithful "
            "model (the gap). Shifts are mean best val L1 minus the unchanged model's, ± the "
            "standard error (SE), from the per-seed differences where both ran the same seeds. "
            "A shift whose two-sided 95% Student-t interval contains zero is called noise: with "
            "two seeds that means less than 12.7 SE."
        )
    top = effects[0]
    lines.append(
        f"Decisive setting: **`{top.setting}`**, the largest mean of the gap closed by fixing "
        "it and the gap opened by breaking it."
    )
    lines.append(
        "\n".join(
            f"{rank}. {describe(effect, gap)}" for rank, effect in enumerate(effects, start=1)
        )
    )
    return lines
