"""``%sagemaker history``: this kernel's calls; ``history VAR`` stores them."""

from __future__ import annotations

from typing import Any

from sm_magic.table import Table


def add_arguments(p: Any) -> None:
    p.add_argument("var", nargs="?", help="store the rows in this variable")


def run(ctx: Any, args: Any) -> Table:
    rows = [entry.row() for entry in list(ctx.runner.history)]
    if args.var:
        ctx.namespace[args.var] = rows
    return Table(rows, title="Calls in this kernel", empty="No calls yet.")
