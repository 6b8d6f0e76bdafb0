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
    if value is not None:
        check(state, param.name, value)
    trait = state.traits()[param.name]
    setattr(state, param.name, trait.default_value if value is None and not trait.allow_none else value)


def check(state: Any, name: str, value: Any) -> None:
    """What a type cannot say: a handler must exist, a home must be a folder this kernel can write."""
    if name == "handler" and value != "auto":
        state.registry.get(value)  # ConfigError naming the closest handlers
    elif name == "home" and value:
        import os
        from pathlib import Path

        folder = Path(value).expanduser()
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(f"home={value!r} cannot be used: {e.strerror or e}.",
                              hint="Give a folder this kernel can create and write.") from None
        if not os.access(folder, os.W_OK | os.X_OK):
            raise ConfigError(f"home={value!r} cannot be used: the folder is not writable.",
                              hint="Give a folder this kernel can write.")


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
