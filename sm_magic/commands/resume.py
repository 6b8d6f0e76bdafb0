"""``%sagemaker resume JOB [VAR]``: finish a batch whose kernel died; finished items are not called again."""

from __future__ import annotations

from typing import Any


def add_arguments(p: Any) -> None:
    p.add_argument("job", type=int, help="the job's id (%%sagemaker jobs)")
    p.add_argument("var", nargs="?", help="store the BatchResult in VAR")
    p.add_argument("--concurrency", type=int, help="calls in flight")


def run(ctx: Any, args: Any) -> Any:
    batch = ctx.runner.resume(args.job, args.concurrency)
    ctx.runner.last = batch
    if args.var:
        ctx.namespace[args.var] = batch
    return batch
