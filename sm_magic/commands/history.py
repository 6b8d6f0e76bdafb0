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
    endpoint, through = _endpoint(ctx, args.endpoint)
    if not journal.enabled:  # logging off: this kernel's summaries in memory
        rows = _in_memory(list(ctx.runner.history), args, endpoint)
        title = "Calls in this kernel (logging is off: `%sagemaker config log=on` keeps them)"
    else:
        from sm_magic.records import session_id

        records = journal.history(session=None if args.all else session_id(), endpoint=endpoint,
                                  status=args.status, text=args.search, job_id=args.job, limit=args.limit)
        rows = [_row(r) for r in reversed(records)]
        title = f"Calls {'in every kernel' if args.all else 'in this kernel'} ({journal.path})"
    if args.var:
        ctx.namespace[args.var] = _frame(rows)
    filtered = any(v is not None for v in (args.endpoint, args.status, args.search, args.job))
    return Table(rows, title=title + through, empty="No calls match." if filtered else "No calls yet.")


def _endpoint(ctx: Any, name: str | None) -> tuple[str | None, str]:
    """``--endpoint``: an alias stands for its endpoint (calls are recorded with the endpoint they reached)."""
    alias = ctx.state.aliases.get(name) if name else None
    return (alias.endpoint, f"; alias {name} → endpoint {alias.endpoint}") if alias else (name, "")


def _in_memory(entries: list[Any], args: Any, endpoint: str | None) -> list[dict[str, Any]]:
    """This kernel's summaries, filtered as the journal would be, as far as memory allows: ``--search``
    reads the cell as written (its first few thousand characters; answers are not kept), a job is one
    row (its status ``partial`` when items failed), and neither other kernels nor jobs can be asked for."""
    for flag, wanted in (("--all", args.all), (f"--job {args.job}", args.job is not None)):
        if wanted:
            raise ConfigError(f"{flag} needs the journal, and logging is off: this kernel's calls are all "
                              "there is.", hint="`%sagemaker config log=on` journals the next calls.")
    search = (args.search or "").lower()
    rows = []
    for entry in entries:
        status = entry.status if entry.status in STATUSES or entry.status == "dry run" else "error"
        if ((endpoint and entry.endpoint != endpoint) or (args.status and status != args.status)
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
