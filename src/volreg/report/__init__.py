"""Summarise a Hydra sweep of training jobs: read the runs, group them by variant, write the report.

``volreg-report DIR`` (or ``python -m volreg.report DIR``) groups the jobs under DIR by their
overrides minus the seed, prints a table of the best validation L1 per variant and writes
``report.md``, ``report.csv``, ``curves.png`` and ``effects.png``.
"""

from volreg.report.runs import Job, ReportError, find_jobs, read_job
from volreg.report.variants import Variant, group_jobs

__all__ = ["Job", "ReportError", "Variant", "find_jobs", "group_jobs", "read_job"]
