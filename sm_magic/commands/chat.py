"""``%sagemaker chat``: the conversations kept for ``--chat`` cells."""

from __future__ import annotations

from typing import Any

from sm_magic.display import Preformatted
from sm_magic.table import Table


def add_arguments(p: Any) -> None:
    p.add_argument("action", choices=["reset", "show"])
    p.add_argument("endpoint", nargs="?")


def run(ctx: Any, args: Any) -> Any:
    chats = ctx.state.chats
    endpoint = args.endpoint or ctx.state.endpoint
    if args.action == "reset":
        if endpoint:
            chats.pop(endpoint, None)
        else:
            chats.clear()
        return Preformatted(f"Chat history cleared ({endpoint or 'all endpoints'}).")
    messages = chats.get(endpoint, [])
    return Table([{"role": m["role"], "content": m["content"]} for m in messages],
                 title=f"Chat with {endpoint}", empty="No messages yet.")
