"""``%sagemaker retry VAR``: re-run the failed and never-run items of a batch."""

from __future__ import annotations

from typing import Any

from sm_magic.errors import ConfigError


def add_arguments(p: Any) -> None:
    p.add_argument("var", help="a batch result (--batch ... --out VAR)")
    p.add_argument("--concurrency", type=int, help="calls in flight")


def run(ctx: Any, args: Any) -> Any:
    from sm_magic.batch import BatchResult

    batch = ctx.value(args.var, "Batch")
    if not isinstance(batch, BatchResult):
        raise ConfigError(f"'{args.var}' is a {type(batch).__name__}, not a batch result (--batch ... --out VAR).")
    if args.concurrency is not None and args.concurrency < 1:
        raise ConfigError(f"--concurrency must be at least 1, not {args.concurrency}.")
    return batch.retry(args.concurrency)
