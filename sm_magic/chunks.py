"""A piece of a document, as QA splits it and the vector index keys it (one class for both)."""

from __future__ import annotations

import functools
import hashlib
import math
from dataclasses import dataclass
from typing import Any

CHARS_PER_TOKEN = 3.0  # conservative for English (≈4): estimates run high, prompts stay in budget


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def chunk_hash(text: str) -> str:
    """What the vector index keys a chunk's vector on: the SHA-256 of its text."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Chunk:
    """A piece of a document: its text, where it came from, and its place there."""

    text: str
    source: str = ""
    index: int = 0

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text)

    @functools.cached_property
    def hash(self) -> str:
        return chunk_hash(self.text)

    def as_source(self, score: float | None = None) -> dict[str, Any]:
        """How a Result lists the chunk among its sources."""
        shown: dict[str, Any] = {"source": self.source, "chunk": self.index, "text": self.text[:1000]}
        if score is not None:
            shown["score"] = round(float(score), 4)
        return shown
