"""``%sagemaker jobs``: batches and QA map steps in the journal, with how far each got."""

from __future__ import annotations

from typing import Any

from sm_magic.table import Table


def add_arguments(p: Any) -> None:
    p.add_argument("--limit", type=int, default=20, help="newest jobs shown (default 20)")


def run(ctx: Any, args: Any) -> Table:
    journal = ctx.runner.journal
    rows = [job.row() for job in journal.jobs(args.limit)] if journal.enabled else []
    return Table(rows, title=f"Jobs ({journal.path})",
                 empty="No jobs yet." if journal.enabled else "Logging is off: no jobs are kept.")
