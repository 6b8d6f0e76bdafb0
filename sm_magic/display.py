"""Rendering for notebooks: live streamed text, tables, dry runs. No AWS or parsing logic here."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from sm_magic.result import Result


class Pacer:
    """When to redraw a growing text so that the total cost stays linear in its length.

    Each redraw re-sends the whole text, so redraws are spaced by at least ``min_interval`` and by
    a time proportional to the text's length: the characters sent per second stay bounded.
    """

    def __init__(self, min_interval: float = 0.05, chars_per_second: float = 400_000.0):
        self.min_interval = min_interval
        self.chars_per_second = chars_per_second
        self._last = 0.0

    def due(self, length: int) -> bool:
        now = time.perf_counter()
        if now - self._last >= max(self.min_interval, length / self.chars_per_second):
            self._last = now
            return True
        return False


class LiveText:
    """One display that grows as chunks arrive (display id updates, paced by :class:`Pacer`)."""

    def __init__(self, pacer: Pacer | None = None):
        from IPython.display import display

        self.pacer = pacer or Pacer()
        self.chunks: list[str] = []
        self.length = 0
        self.updates = 0
        self.handle = display({"text/plain": "…", "text/markdown": "…"}, raw=True, display_id=True)

    def add(self, chunk: str) -> None:
        self.chunks.append(chunk)
        self.length += len(chunk)
        if self.pacer.due(self.length):
            self._show("".join(self.chunks) + " ▌")

    def _show(self, text: str) -> None:
        self.updates += 1
        if self.handle is not None:
            self.handle.update({"text/plain": text, "text/markdown": text}, raw=True)

    def finish(self, result: Result) -> None:
        """Replace the growing text with the rendered result (answer and footer)."""
        self.updates += 1
        if self.handle is not None:
            data, metadata = result._repr_mimebundle_()
            self.handle.update(data, metadata=metadata, raw=True)


class Table:
    """Rows of dicts, shown as a Markdown table in notebooks and aligned text in terminals."""

    def __init__(self, rows: Iterable[dict[str, Any]], title: str = "", empty: str = "(none)"):
        self.rows = list(rows)
        self.title = title
        self.empty = empty

    def columns(self) -> list[str]:
        cols: list[str] = []
        for row in self.rows:
            cols += [c for c in row if c not in cols]
        return cols

    @staticmethod
    def _cell(value: Any) -> str:
        return "" if value is None else str(value).replace("|", "\\|").replace("\n", " ")

    def _repr_markdown_(self) -> str:
        head = f"**{self.title}**\n\n" if self.title else ""
        if not self.rows:
            return head + self.empty
        cols = self.columns()
        lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        lines += ["| " + " | ".join(self._cell(r.get(c)) for c in cols) + " |" for r in self.rows]
        return head + "\n".join(lines)

    def __repr__(self) -> str:
        head = f"{self.title}\n" if self.title else ""
        if not self.rows:
            return head + self.empty
        cols = self.columns()
        widths = {c: max(len(c), *(len(self._cell(r.get(c))) for r in self.rows)) for c in cols}
        lines = ["  ".join(c.ljust(widths[c]) for c in cols)]
        lines += ["  ".join(self._cell(r.get(c)).ljust(widths[c]) for c in cols) for r in self.rows]
        return head + "\n".join(line.rstrip() for line in lines)


class Text:
    """Preformatted text (dry runs, session details) shown as a code block in notebooks."""

    def __init__(self, text: str, title: str = ""):
        self.text = text
        self.title = title

    def _repr_markdown_(self) -> str:
        head = f"**{self.title}**\n\n" if self.title else ""
        return f"{head}```\n{self.text}\n```"

    def __repr__(self) -> str:
        return f"{self.title}\n{self.text}" if self.title else self.text
