"""Rows of dicts as a Markdown table (notebooks) or aligned text (terminals): pure formatting."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


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
