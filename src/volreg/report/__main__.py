"""volreg-report DIR: summarise a sweep (or one run) and write report.md, report.csv and plots."""

import argparse
import logging
import sys
from pathlib import Path

from volreg.report.effects import keras_gap, setting_effects
from volreg.report.markdown import render_report
from volreg.report.plots import plot_curves, plot_effects
from volreg.report.runs import ReportError, find_jobs
from volreg.report.tables import problem_jobs, problem_table, variant_table, write_csv
from volreg.report.variants import group_jobs

log = logging.getLogger("volreg.report")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="volreg-report",
        description="Group the jobs of a Hydra sweep by their overrides minus the seed, print "
        "the best val L1 per variant and write report.md, report.csv, curves.png and "
        "effects.png.",
    )
    parser.add_argument("directory", type=Path, help="a multirun directory or one run directory")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="directory for the report files (default: DIRECTORY itself)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        jobs = find_jobs(args.directory)
    except ReportError as error:
        print(f"volreg-report: {error}", file=sys.stderr)
        return 2

    variants = group_jobs(jobs)
    out = args.out or args.directory
    out.mkdir(parents=True, exist_ok=True)
    write_report(variants, args.directory, out)

    print(variant_table(variants))
    problems = problem_jobs(variants)
    if problems:
        print(f"\n{len(problems)} job(s) did not complete:")
        print(problem_table(problems))
    effects = setting_effects(variants)
    if effects:
        print(f"\nDecisive setting: {effects[0].setting}")
    print(f"\nwrote report.md, report.csv, curves.png and effects.png to {out}")
    return 0


def write_report(variants, source: Path, out: Path) -> None:
    (out / "report.md").write_text(render_report(variants, source))
    write_csv(variants, out / "report.csv")

    figure = plot_curves(variants)
    figure.savefig(out / "curves.png", dpi=100)
    effects = setting_effects(variants)
    figure = plot_effects(effects, keras_gap(variants))
    figure.savefig(out / "effects.png", dpi=100)


if __name__ == "__main__":
    sys.exit(main())
