"""The hand-written splitter sm_magic had before langchain-text-splitters (commit bc0cb2d, sm_magic/qa.py),
kept verbatim for the splitting benchmark's "before" row. Not used by sm_magic."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

CHARS_PER_TOKEN = 3.0


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


@dataclass
class Document:
    text: str
    source: str


@dataclass
class Chunk:
    text: str
    source: str
    index: int


# -- splitting -------------------------------------------------------------------------------------
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def _pieces(text: str, limit: int) -> list[tuple[str, bool]]:
    """Paragraphs, then sentences, then hard cuts, each at most ``limit`` characters.
    The flag says whether the piece starts a paragraph."""
    out: list[tuple[str, bool]] = []
    for paragraph in re.split(r"\n\s*\n", text):
        paragraph = paragraph.strip()
        if not paragraph:
            continue
        if len(paragraph) <= limit:
            out.append((paragraph, True))
            continue
        first = True
        for sentence in _SENTENCE.split(paragraph):
            while len(sentence) > limit:
                out.append((sentence[:limit], first))
                sentence, first = sentence[limit:], False
            if sentence:
                out.append((sentence, first))
                first = False
    return out


def _join(pieces: list[tuple[str, bool]]) -> str:
    text = ""
    for piece, new_paragraph in pieces:
        text += ("\n\n" if new_paragraph else " ") + piece if text else piece
    return text


def split(documents: list[Document], chunk_tokens: int, overlap_tokens: int = 0) -> list[Chunk]:
    """Chunks of at most ``chunk_tokens`` (estimated), on paragraph/sentence boundaries, with overlap."""
    limit = max(1, int(chunk_tokens * CHARS_PER_TOKEN))
    overlap = int(overlap_tokens * CHARS_PER_TOKEN)
    chunks: list[Chunk] = []
    for doc in documents:
        current: list[tuple[str, bool]] = []
        index = 0
        for piece in _pieces(doc.text, limit):
            if current and len(_join([*current, piece])) > limit:
                chunks.append(Chunk(_join(current), doc.source, index))
                index += 1
                kept: list[tuple[str, bool]] = []
                for previous in reversed(current):  # carry the tail over as overlap
                    if len(_join([previous, *kept])) > overlap:
                        break
                    kept.insert(0, previous)
                current = kept if len(_join([*kept, piece])) <= limit else []
            current.append(piece)
        if current:
            chunks.append(Chunk(_join(current), doc.source, index))
    return chunks
