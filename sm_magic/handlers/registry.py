"""Handlers by name: the presets plus what a user registered in this session."""

from __future__ import annotations

import difflib
import threading
from typing import Any

from sm_magic.errors import ConfigError
from sm_magic.handlers.base import ContentHandler, adapt
from sm_magic.handlers.presets import PRESETS


def closest(name: str, choices: list[str]) -> str:
    """'Did you mean …' text, or the list of choices."""
    near = difflib.get_close_matches(name, choices, n=3, cutoff=0.5)
    if near:
        return "Did you mean " + " or ".join(repr(n) for n in near) + "?"
    return "Choose one of: " + ", ".join(choices) + "."


class Registry:
    """Name → handler. Presets are always there; registered handlers can shadow none of them."""

    def __init__(self) -> None:
        self._custom: dict[str, ContentHandler] = {}
        self._lock = threading.Lock()

    def register(self, name: str, handler: Any) -> ContentHandler:
        """Add a handler (ours, or any LangChain-style one) under ``name``."""
        if name in PRESETS or name == "auto":
            raise ConfigError(f"'{name}' is a preset name; register the handler under another name.")
        wrapped = adapt(handler, name)
        if wrapped.name in ("custom", type(handler).__name__):
            wrapped.name = name
        with self._lock:
            self._custom[name] = wrapped
        return wrapped

    def remove(self, name: str) -> None:
        with self._lock:
            if name not in self._custom:
                raise ConfigError(f"No registered handler '{name}'. {closest(name, list(self._custom))}")
            del self._custom[name]

    def get(self, name: str) -> ContentHandler:
        with self._lock:
            if name in self._custom:
                return self._custom[name]
        if name in PRESETS:
            return PRESETS[name]()
        if name == "json":
            raise ConfigError(
                "The json handler needs a request template and a response path: register one with "
                "`%sagemaker handlers json NAME --request '{\"inputs\": \"{prompt}\"}' "
                "--response '[0].generated_text'`."
            )
        raise ConfigError(f"Unknown content handler '{name}'. {closest(name, self.names())}")

    def names(self) -> list[str]:
        with self._lock:
            return [*PRESETS, *self._custom]

    def describe(self) -> list[dict[str, str]]:
        """One row per handler: name, kind, content type, streaming, and what it does in plain words."""
        rows = []
        for name in self.names():
            handler = self.get(name)
            kind = "preset" if name in PRESETS else "registered"
            inner = handler if kind == "preset" else getattr(handler, "handler", handler)
            rows.append({"name": name, "kind": kind, "content_type": handler.content_type,
                         "streams tokens": "yes" if handler.streams else "no", "about": about(inner)})
        return rows


def about(handler: Any) -> str:
    """The first sentence of a handler class's docstring without markup, else its class name."""
    doc = (type(handler).__doc__ or "").strip()  # a class's docstring is its own, never inherited
    if not doc:
        return f"{type(handler).__name__} (no description)"
    return doc.splitlines()[0].replace("``", "").replace("`", "").rstrip()
