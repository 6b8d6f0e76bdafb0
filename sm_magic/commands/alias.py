"""``%sagemaker alias``: endpoint aliases saved in a plain INI file (flags from the parameter table)."""

from __future__ import annotations

from typing import Any

from IPython.core.error import UsageError

from sm_magic.calls import check_encodable
from sm_magic.params import ALIAS_PARAMS
from sm_magic.table import Table


def add_arguments(p: Any) -> None:
    p.add_argument("action", choices=["add", "list", "remove"])
    p.add_argument("name", nargs="?")
    p.add_argument("endpoint", nargs="?")
    for param in ALIAS_PARAMS:
        param.add_to(p, help=param.help.replace(" for this cell only", ""))


def run(ctx: Any, args: Any) -> Table:
    from sm_magic.aliases import Alias

    store = ctx.state.aliases
    if args.action == "add":
        if not (args.name and args.endpoint):
            raise UsageError("usage: %sagemaker alias add NAME ENDPOINT [--region R --profile P --handler H ...]")
        values = {p.name: getattr(args, p.name) for p in ALIAS_PARAMS if getattr(args, p.name) is not None}
        alias = Alias(args.name, args.endpoint, values)
        _check_text(args.name, alias.to_section(), store.path)
        store.add(alias)
    elif args.action == "remove":
        if not args.name:
            raise UsageError("usage: %sagemaker alias remove NAME")
        _check_text(args.name, {}, store.path)
        store.remove(args.name)
    rows = [{"alias": a.name, "endpoint": a.endpoint,
             **{k: v for k, v in a.to_section().items() if k != "endpoint"}} for a in store]
    return Table(rows, title=f"Aliases ({store.path})", empty="No aliases saved yet.")


def _check_text(name: str, section: dict[str, str], path: Any) -> None:
    """Refuse, before the file is touched, a text UTF-8 cannot encode (a lone surrogate): one paragraph."""
    labels = {"endpoint": "endpoint name", **{p.name: f"{p.option} value" for p in ALIAS_PARAMS}}
    for what, text in (("alias name", name), *((labels.get(k, k), v) for k, v in section.items())):
        check_encodable(text, what, use=f"saved (the aliases file {path} was not changed)",
                        hint="Type it again without that character.")
