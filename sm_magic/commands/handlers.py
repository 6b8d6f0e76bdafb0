"""``%sagemaker handlers``: list, register, remove, define from JSON, or detect content handlers."""

from __future__ import annotations

import json
from typing import Any

from IPython.core.error import UsageError

from sm_magic.errors import ConfigError
from sm_magic.table import Table


def add_arguments(p: Any) -> None:
    p.add_argument("action", nargs="?", choices=["list", "register", "remove", "json", "detect"], default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("var", nargs="?", help="handler object in the notebook (register)")
    p.add_argument("--request", help="json: request template, e.g. '{\"inputs\": \"{prompt}\"}'")
    p.add_argument("--response", help="json: path of the answer, e.g. '[0].generated_text'")
    p.add_argument("--stream-path", help="json: path of a streamed token, e.g. 'token.text'")


def run(ctx: Any, args: Any) -> Table:
    state = ctx.state
    registry = state.registry
    if args.action == "register":
        if not (args.name and args.var):
            raise UsageError("usage: %sagemaker handlers register NAME VAR")
        registry.register(args.name, ctx.value(args.var, "Handler"))
    elif args.action == "remove":
        if not args.name:
            raise UsageError("usage: %sagemaker handlers remove NAME")
        registry.remove(args.name)
    elif args.action == "json":
        from sm_magic.handlers.presets import JSONTemplate

        if not (args.name and args.request and args.response):
            raise UsageError("usage: %sagemaker handlers json NAME --request TEMPLATE --response PATH "
                             "[--stream-path PATH]")
        try:
            handler = JSONTemplate(args.request, args.response, args.stream_path, name=args.name)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--request is not valid JSON ({e}).") from None
        registry.register(args.name, handler)
    elif args.action == "detect":
        endpoint = args.name or state.endpoint
        if not endpoint:
            raise UsageError("usage: %sagemaker handlers detect ENDPOINT")
        found = state.detect(state.session, endpoint)
        return Table([{"endpoint": endpoint, "handler": found.handler, "image": found.image, "why": found.reason}],
                     title="Detected handler")
    return Table(registry.describe(), title="Content handlers")
