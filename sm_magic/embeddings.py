"""``SagemakerEndpointEmbeddings``: a SageMaker embeddings endpoint as a LangChain ``Embeddings``.

Takes langchain-community's constructor arguments (``endpoint_name``, ``region_name``,
``credentials_profile_name``, ``client``, ``content_handler``, ``model_kwargs``, ``endpoint_kwargs``),
so code written for ``langchain_community.embeddings.SagemakerEndpointEmbeddings`` runs with only
its import changed. Unlike that class it sends its batches concurrently (at most
``max_concurrency`` requests in flight), through sm_magic's call path: one session and one client
per object, botocore's retries, and sm_magic's errors with their types kept.

Example::

    from sm_magic.embeddings import SagemakerEndpointEmbeddings

    embeddings = SagemakerEndpointEmbeddings(endpoint_name="embed", region_name="us-east-1",
                                             content_handler="tei-embedding")
    vectors = embeddings.embed_documents(["first chunk", "second chunk"])
    query = embeddings.embed_query("what does the first chunk say?")
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from langchain_core.embeddings import Embeddings

from sm_magic.calls import invoke
from sm_magic.endpoint_fields import EndpointFields
from sm_magic.errors import HandlerError
from sm_magic.handlers.embeddings import EmbeddingsHandler, embeddings_handler

__all__ = ["SagemakerEndpointEmbeddings"]

Progress = Callable[[int, int], None]


class SagemakerEndpointEmbeddings(EndpointFields, Embeddings):
    """Embeddings from a SageMaker real-time endpoint (TEI, JumpStart, or any container via a handler).

    ``content_handler``: ``"tei-embedding"`` (default), ``"jumpstart-embedding"``, an sm_magic embeddings
    handler, or a langchain-community ``EmbeddingsContentHandler``; ``model_kwargs`` are extra fields of
    the request body.
    """

    batch_size: int | None = None
    """Texts per request (default: the handler's, 32 for TEI)."""
    max_concurrency: int = 4
    """Requests in flight at once in ``embed_documents``."""

    def make_handler(self, given: Any) -> EmbeddingsHandler:
        return embeddings_handler(given)

    @property
    def identity(self) -> str:
        """What decides the vectors: endpoint, region, runtime URL, handler, invoke arguments, model kwargs.

        Vectors from two identities are never mixed (the on-disk index keys on this).
        """
        target = self.target()
        parts = {"endpoint": self.endpoint_name, "region": target.session.region,
                 "url": target.session.settings.endpoint_url, "handler": target.handler.name,
                 "endpoint_kwargs": self.endpoint_kwargs or {}, "model_kwargs": self.model_kwargs or {}}
        digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return f"{self.endpoint_name}:{digest}"

    def _embed_batch(self, texts: list[str]) -> list[list[float]]:
        t = self.target()
        result = invoke(t.session, self.endpoint_name, texts, t.handler, dict(self.model_kwargs or {}), t.options)
        vectors = result.data
        if not isinstance(vectors, list) or len(vectors) != len(texts):
            got = len(vectors) if isinstance(vectors, list) else 0
            raise HandlerError(f"sent {len(texts)} texts, got {got} vectors back.", handler=t.handler.name,
                               body=result.body, endpoint=self.endpoint_name)
        return vectors

    def requests_for(self, count: int, chunk_size: int | None = None) -> int:
        """How many requests :meth:`embed_documents` sends for ``count`` texts."""
        size = chunk_size or self.batch_size or self.target().handler.batch_size
        return -(-count // max(1, size))

    def embed_documents(self, texts: list[str], chunk_size: int | None = None,
                        progress: Progress | None = None) -> list[list[float]]:
        """One vector per text, in order: ``chunk_size`` (or ``batch_size``) texts per request, concurrently.

        ``progress(done, total)`` is called after each request with the texts embedded so far.
        """
        texts = list(texts)
        if not texts:
            return []
        size = chunk_size or self.batch_size or self.target().handler.batch_size
        if size < 1 or self.max_concurrency < 1:
            raise ValueError("batch size and max_concurrency must be at least 1")
        batches = [texts[i:i + size] for i in range(0, len(texts), size)]
        if len(batches) == 1 or self.max_concurrency == 1:
            out: list[list[float]] = []
            for batch in batches:
                out += self._embed_batch(batch)
                if progress:
                    progress(len(out), len(texts))
            return out
        done = 0
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(batches))) as pool:
            futures = [pool.submit(self._embed_batch, b) for b in batches]
            try:
                results = []
                for future in futures:
                    results.append(future.result())
                    done += len(results[-1])
                    if progress:
                        progress(done, len(texts))
            except BaseException:
                for future in futures:
                    future.cancel()
                raise
        return [v for batch in results for v in batch]

    def embed_query(self, text: str) -> list[float]:
        return self._embed_batch([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        return await asyncio.to_thread(self.embed_query, text)
