"""``%sagemaker config``: every setting, its value and where it comes from; ``key=value`` sets one.

Keys are the parameter table's configurable rows (also ``%config SageMaker.<key>``) and its session
settings (botocore's timeouts, retries and pool). Values are checked when set, not at the next call.
"""

from __future__ import annotations

import json
from typing import Any

from sm_magic.errors import ConfigError
from sm_magic.params import CONFIG_PARAMS, SESSION_SETTINGS, lookup
from sm_magic.table import Table


def add_arguments(p: Any) -> None:
    p.add_argument("assignments", nargs="*", metavar="KEY=VALUE")


def apply(state: Any, assignment: str) -> None:
    """Apply ``key=value`` to the shell's settings or its session."""
    key, sep, text = assignment.partition("=")
    if not sep:
        raise ConfigError(f"Expected key=value, got {assignment!r}.")
    param = lookup(key, (*CONFIG_PARAMS, *SESSION_SETTINGS), "setting")
    value = None if text.strip() in ("", "none", "None") else param.parse(text)
    if param in SESSION_SETTINGS:
        state.set_session(state.session.with_changes(**{param.name: param.default if value is None else value}))
        return
    trait = state.traits()[param.name]
    setattr(state, param.name, trait.default_value if value is None and not trait.allow_none else value)


def rows(state: Any) -> list[dict[str, Any]]:
    """Setting, value, source."""
    configured = state.config.get("SageMaker", {})
    out = []
    for param in CONFIG_PARAMS:
        value = getattr(state, param.name)
        if param.name in configured and configured[param.name] == value:
            source = f"config (SageMaker.{param.name})"
        elif value == param.default or value in (None, "", [], {}):
            source = "default"
        else:
            source = "this kernel (%sagemaker config / panel)"
        shown = json.dumps(value) if isinstance(value, list | dict) else value
        out.append({"setting": param.name, "value": shown, "source": source})
    settings = state.session.settings
    for param in SESSION_SETTINGS:
        value = getattr(settings, param.name)
        out.append({"setting": param.name, "value": value, "source": "default" if value == param.default
                    else "session"})
    out.append({"setting": "aliases file", "value": str(state.aliases.path),
                "source": "SM_MAGIC_ENDPOINTS, SM_MAGIC_HOME or default"})
    return out


def run(ctx: Any, args: Any) -> Table:
    for assignment in args.assignments:
        apply(ctx.state, assignment)
    return Table(rows(ctx.state), title="sm_magic settings")
