"""``%sagemaker debug on|off``: full tracebacks instead of one-paragraph errors."""

from __future__ import annotations

from typing import Any

from sm_magic.display import Preformatted


def add_arguments(p: Any) -> None:
    p.add_argument("switch", choices=["on", "off"])


def run(ctx: Any, args: Any) -> Preformatted:
    ctx.state.debug = args.switch == "on"
    return Preformatted(f"Full tracebacks {'on' if ctx.state.debug else 'off'}.")
