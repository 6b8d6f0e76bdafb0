"""``%sagemaker history``: calls from the journal — this kernel's by default, ``--all`` across kernels."""

from __future__ import annotations

import argparse
from typing import Any

from sm_magic.calls import check_encodable
from sm_magic.errors import ConfigError
from sm_magic.journal import STATUSES
from sm_magic.table import Table

FILTER_HINTS = {  # what to do instead, per text filter
    "--search": "The journal keeps each lone surrogate of a prompt or an answer as U+FFFD (\ufffd): search for "
                "the text around it, or for U+FFFD itself.",
    "--endpoint": "Endpoint names are plain ASCII: type the name again (`%sagemaker endpoints` lists them).",
}


def add_arguments(p: Any) -> None:
    p.add_argument("var", nargs="?", help="store the rows in this variable (a DataFrame when pandas is there)")
    p.add_argument("--all", action="store_true", help="every kernel's calls, not only this kernel's")
    p.add_argument("--endpoint", help="only calls to this endpoint")
    p.add_argument("--status", choices=sorted(STATUSES), metavar="STATUS",
                   help="only calls with this status: %(choices)s")
    p.add_argument("--search", metavar="TEXT", help="only calls whose prompt or answer contains TEXT")
    p.add_argument("--job", type=int, help="only the calls of this job")
    p.add_argument("--limit", type=_limit, default=50, help="newest calls shown (default 50)")


def _limit(text: str) -> int:
    """``--limit``: a whole number, at least 1."""
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"--limit must be a whole number of at least 1, not {text}")
    return int(text)


def run(ctx: Any, args: Any) -> Any:
    _check_filters(args)
    journal = ctx.runner.journal
    if not journal.enabled:  # logging off: this kernel's summaries in memory
        rows = _in_memory(list(ctx.runner.history), args)
        title = "Calls in this kernel (logging is off: `%sagemaker config log=on` keeps them)"
    else:
        from sm_magic.records import session_id

        records = journal.history(session=None if args.all else session_id(), endpoint=args.endpoint,
                                  status=args.status, text=args.search, job_id=args.job, limit=args.limit)
        rows = [_row(r) for r in reversed(records)]
        title = f"Calls {'in every kernel' if args.all else 'in this kernel'} ({journal.path})"
    if args.var:
        ctx.namespace[args.var] = _frame(rows)
    return Table(rows, title=title, empty="No calls yet.")


def _in_memory(entries: list[Any], args: Any) -> list[dict[str, Any]]:
    """This kernel's summaries, filtered as the journal would be (``--search`` reads the prompt as kept
    in memory: its first few thousand characters; answers are not kept)."""
    if args.job is not None:
        raise ConfigError(f"--job {args.job}: jobs are journaled, and logging is off.",
                          hint="`%sagemaker config log=on` journals the next ones.")
    search = (args.search or "").lower()
    rows = []
    for entry in entries:
        status = entry.status if entry.status in STATUSES or entry.status == "dry run" else "error"
        if ((args.endpoint and entry.endpoint != args.endpoint) or (args.status and status != args.status)
                or (search and search not in entry.prompt.lower())):
            continue
        rows.append(entry.row())
    return rows[-args.limit:]


def _check_filters(args: Any) -> None:
    """A text filter UTF-8 cannot encode (a lone surrogate) is one paragraph, not the database's traceback."""
    for flag, text in (("--search", args.search), ("--endpoint", args.endpoint)):
        check_encodable(text or "", f"{flag} text", use="looked up", hint=FILTER_HINTS[flag])


def _row(record: Any) -> dict[str, Any]:
    import time

    from sm_magic.history import PROMPT_HEAD, printable

    head = printable((record.template or record.prompt or "")[:PROMPT_HEAD + 1].replace("\n", " "))
    usage = record.usage or {}
    return {"time": time.strftime("%m-%d %H:%M:%S", time.localtime(record.time)), "endpoint": record.endpoint,
            "handler": record.handler, "prompt": head[:PROMPT_HEAD] + ("…" if len(head) > PROMPT_HEAD else ""),
            "latency_ms": None if record.latency is None else round(record.latency * 1000),
            "tokens": usage.get("completion_tokens"),
            "status": record.error_class if record.status == "error" else record.status,
            "job": record.job_id}


def _frame(rows: list[dict[str, Any]]) -> Any:
    try:
        import pandas
    except ImportError:
        return rows
    return pandas.DataFrame(rows)
