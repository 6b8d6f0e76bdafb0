"""What the views show of past calls: bounded summaries in memory (the journal keeps everything)."""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass
from typing import Any

HISTORY_LIMIT = 200  # summaries kept in memory; the journal keeps everything
PROMPT_HEAD = 80
KEPT_PROMPT = 4000  # characters of a prompt kept in memory for the panel's Restore
_PLAIN = (str, int, float, bool, list, dict)  # the value types a summary keeps


_SURROGATE = re.compile("[\ud800-\udfff]")


def printable(text: str) -> str:
    """Text any frontend can serialize: lone surrogates become U+FFFD."""
    return _SURROGATE.sub("\ufffd", text) if text and not text.isascii() else text


@dataclass(slots=True)
class HistoryEntry:
    """A bounded summary of one call (never the whole prompt or answer)."""

    when: float
    endpoint: str
    handler: str
    prompt: str
    latency: float | None
    tokens: int | None
    status: str
    values: dict[str, Any]
    length: int = 0  # the whole prompt's length in characters (``prompt`` keeps KEPT_PROMPT of them)
    job: str | None = None  # a job's kind ("batch", "qa-map"): the entry sums it up, its prompt is no prompt

    def row(self) -> dict[str, Any]:
        head = printable(self.prompt[:PROMPT_HEAD + 1].replace("\n", " "))
        return {
            "time": time.strftime("%H:%M:%S", time.localtime(self.when)),
            "endpoint": self.endpoint, "handler": self.handler,
            "prompt": head[:PROMPT_HEAD] + ("…" if len(self.prompt) > PROMPT_HEAD else ""),
            "latency_ms": None if self.latency is None else round(self.latency * 1000),
            "tokens": self.tokens, "status": self.status,
        }


def settings_of(values: dict[str, Any]) -> dict[str, Any]:
    """The parameter values worth keeping (history, a job's meta): never the items, documents or namespace."""
    kept = _kept_names()
    return {k: v for k, v in values.items() if k in kept and isinstance(v, _PLAIN)}


@functools.cache
def _kept_names() -> frozenset[str]:
    from sm_magic.params import BY_NAME, VARIABLE_PARAMS

    return frozenset(BY_NAME) - VARIABLE_PARAMS

