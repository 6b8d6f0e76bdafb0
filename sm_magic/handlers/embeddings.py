"""Embeddings content handlers: a LIST of texts per request in, a list of vectors out.

``TEIEmbeddings`` (Hugging Face Text Embeddings Inference), ``JumpStartEmbeddings`` (JumpStart
``huggingface-textembedding-*``), ``JSONTemplateEmbeddings`` (any JSON container), and
``LangChainEmbeddingsHandler`` that wraps langchain-community's ``EmbeddingsContentHandler`` duck
type (``transform_input(texts, model_kwargs) -> bytes``, ``transform_output(body) -> [[float]]``).
Each handler answers that duck type too, so it can be handed to LangChain unchanged.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sm_magic.errors import HandlerError
from sm_magic.handlers.base import Body, JSONHandler, Output, Prompt

Vectors = list[list[float]]


def _texts(prompt: Prompt | list[str]) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if not all(isinstance(t, str) for t in prompt):
        raise TypeError("an embeddings handler encodes a list of strings")
    return list(prompt)


class EmbeddingsHandler(JSONHandler):
    """Base: ``encode(texts)`` → body, ``decode(body)`` → ``Output(data=vectors)``."""

    streams = False
    batch_size = 32  # texts per request that the container accepts

    def encode(self, prompt: Prompt | list[str], params: dict[str, Any], stream: bool = False) -> bytes:
        return json.dumps(self.request(_texts(prompt), {k: v for k, v in params.items() if v is not None})).encode()

    def request(self, texts: list[str], params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def vectors(self, data: Any, body: bytes) -> Any:
        raise NotImplementedError

    def decode(self, body: bytes) -> Any:
        vectors = check_vectors(self.vectors(self.load(body), body), self, body)
        dims = len(vectors[0]) if vectors else 0
        return Output(f"[{len(vectors)} embeddings: {dims} dimensions]", data=vectors)

    # langchain-community's EmbeddingsContentHandler duck type
    def transform_input(self, prompt: list[str], model_kwargs: dict[str, Any]) -> bytes:  # type: ignore[override]
        return self.encode(prompt, model_kwargs)

    def transform_output(self, output: Any) -> Vectors:  # type: ignore[override]
        body = output.read() if hasattr(output, "read") else output
        return self.decode(body).data


def check_vectors(vectors: Any, handler: Any, body: bytes) -> Vectors:
    """A non-empty list of equally long lists of finite numbers, or a HandlerError naming the shape."""
    name = getattr(handler, "name", "custom")
    if isinstance(vectors, list) and vectors and all(isinstance(v, int | float) for v in vectors):
        vectors = [vectors]  # one text answered with a flat vector
    ok = isinstance(vectors, list) and bool(vectors) and all(
        isinstance(v, list) and v and all(isinstance(x, int | float) and math.isfinite(x) for x in v)
        for v in vectors)
    if not ok:
        raise HandlerError("expected a list of vectors (lists of finite numbers).", handler=name, body=bytes(body))
    if len({len(v) for v in vectors}) != 1:
        raise HandlerError("the vectors have different lengths.", handler=name, body=bytes(body))
    return vectors


class TEIEmbeddings(EmbeddingsHandler):
    """TEI: ``{"inputs": [texts], "truncate": true}`` → ``[[floats], ...]``; at most 32 texts a request."""

    name = "tei-embedding"

    def request(self, texts: list[str], params: dict[str, Any]) -> Any:
        return {"inputs": texts, "truncate": True, **params}  # long chunks are cut, not refused

    def vectors(self, data: Any, body: bytes) -> Any:
        return data


class JumpStartEmbeddings(EmbeddingsHandler):
    """JumpStart text embedding: ``{"text_inputs": [texts]}`` → ``{"embedding": [[floats], ...]}``."""

    name = "jumpstart-embedding"

    def request(self, texts: list[str], params: dict[str, Any]) -> Any:
        return {"text_inputs": texts, **params}

    def vectors(self, data: Any, body: bytes) -> Any:
        if not isinstance(data, dict) or "embedding" not in data:
            raise self.shape_error('{"embedding": [[numbers], ...]}', body)
        return data["embedding"]


class JSONTemplateEmbeddings(EmbeddingsHandler):
    """Any JSON container: ``"{texts}"`` in the template becomes the list of texts, ``"{params}"``
    the model parameters; ``response_path``, a JMESPath expression (``vectors``, ``data[*].embedding``),
    finds the vectors.
    """

    def __init__(self, request_template: dict | str, response_path: str = "", batch_size: int = 32,
                 name: str = "json-embeddings"):
        self.template = json.loads(request_template) if isinstance(request_template, str) else request_template
        self.response_path = response_path
        self.batch_size = batch_size
        self.name = name

    def request(self, texts: list[str], params: dict[str, Any]) -> Any:
        values = {"{texts}": texts, "{params}": params}

        def fill(node: Any) -> Any:
            if isinstance(node, dict):
                return {k: fill(v) for k, v in node.items()}
            if isinstance(node, list):
                return [fill(v) for v in node]
            return values.get(node, node) if isinstance(node, str) else node

        return fill(self.template)

    def vectors(self, data: Any, body: bytes) -> Any:
        if not self.response_path:
            return data
        import jmespath
        from jmespath.exceptions import JMESPathError

        try:
            found = jmespath.search(self.response_path, data)
        except JMESPathError as e:
            raise HandlerError(f"response path {self.response_path!r} is not valid JMESPath ({e}).",
                               handler=self.name) from None
        if found is None:
            raise self.shape_error(f"vectors at {self.response_path!r}", body)
        return found


class LangChainEmbeddingsHandler(EmbeddingsHandler):
    """langchain-community's ``EmbeddingsContentHandler`` (or anything shaped like it), called unchanged."""

    batch_size = 64  # langchain-community's embed_documents(chunk_size=64)

    def __init__(self, handler: Any, name: str | None = None):
        self.handler = handler
        self.name = name or type(handler).__name__
        self.content_type = getattr(handler, "content_type", None) or "application/json"
        self.accepts = getattr(handler, "accepts", None) or "application/json"

    def encode(self, prompt: Prompt | list[str], params: dict[str, Any], stream: bool = False) -> bytes:
        try:
            body = self.handler.transform_input(_texts(prompt), params)
        except Exception as e:
            raise HandlerError(f"transform_input raised {type(e).__name__}: {e}", handler=self.name) from e
        return body.encode() if isinstance(body, str) else bytes(body)

    def decode(self, body: bytes) -> Any:
        try:
            vectors = self.handler.transform_output(Body(body))
        except Exception as e:
            raise HandlerError(f"transform_output raised {type(e).__name__}: {e}", handler=self.name,
                               body=bytes(body)) from e
        if hasattr(vectors, "tolist"):
            vectors = vectors.tolist()
        vectors = check_vectors(vectors, self, body)
        return Output(f"[{len(vectors)} embeddings: {len(vectors[0])} dimensions]", data=vectors)


EMBEDDING_HANDLERS: dict[str, type[EmbeddingsHandler]] = {
    "tei-embedding": TEIEmbeddings,
    "jumpstart-embedding": JumpStartEmbeddings,
}


def embeddings_handler(handler: Any = None) -> EmbeddingsHandler:
    """A handler from a name (``tei-embedding``, ``jumpstart-embedding``), ours, or LangChain's duck type."""
    if handler is None:
        return TEIEmbeddings()
    if isinstance(handler, str):
        try:
            return EMBEDDING_HANDLERS[handler]()
        except KeyError:
            raise ValueError(f"unknown embeddings handler {handler!r}; choose one of: "
                             f"{', '.join(EMBEDDING_HANDLERS)}") from None
    if isinstance(handler, EmbeddingsHandler):
        return handler
    if hasattr(handler, "transform_input") and hasattr(handler, "transform_output"):
        return LangChainEmbeddingsHandler(handler)
    raise TypeError(f"{type(handler).__name__} is not an embeddings content handler: it needs transform_input "
                    "and transform_output")
