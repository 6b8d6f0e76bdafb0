"""``%sagemaker endpoints``: list the region's endpoints (async ones say so), or describe one."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError

from sm_magic.table import Table


def add_arguments(p: Any) -> None:
    p.add_argument("action", nargs="?", choices=["list", "describe"], default="list")
    p.add_argument("name", nargs="?", help="endpoint to describe, or a filter for the list")


def run(ctx: Any, args: Any) -> Table:
    from sm_magic.endpoints import describe_endpoint, list_endpoints

    session = ctx.state.session
    if args.action == "describe":
        if not args.name:
            raise UsageError("usage: %sagemaker endpoints describe NAME")
        info = describe_endpoint(session, args.name)
        return Table([{"field": k, "value": v} for k, v in info.items()], title=f"Endpoint {args.name}")
    rows = list_endpoints(session, args.name or "")
    return Table(rows, title=f"Endpoints in {session.region}", empty="No endpoints found.")
