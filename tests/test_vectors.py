"""The on-disk vector index: embed only what is new, top-K search, two processes at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from sm_magic.chunks import Chunk, chunk_hash
from sm_magic.embeddings import SagemakerEndpointEmbeddings
from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig
from sm_magic.local.embedder import EMBEDDING_INSTALL_HINT, embedding_model_available
from sm_magic.session import Session
from sm_magic.vectors import VectorIndex, VectorIndexError

NEEDLE = "The lighthouse keeper's cat is named Admiral Whiskers and sleeps on the lamp room stairs."
QUESTION = "What is the name of the lighthouse keeper's cat?"
TOPICS = ["the harvest festival and its apple pies", "tax rules for small shops", "training schedules for runners",
          "how bridges are inspected after floods", "the history of the town's railway station",
          "repairing bicycles in winter", "the choir's rehearsal calendar", "recycling rules for glass"]


def _paragraphs(n: int, seed: str = "") -> list[str]:
    return [f"Section {i}{seed}: notes about {TOPICS[i % len(TOPICS)]}, item {i}." for i in range(n)]


@pytest.fixture(scope="module")
def retrieval_local() -> Iterator[LocalEndpoint]:
    if not embedding_model_available():
        pytest.fail(EMBEDDING_INSTALL_HINT)
    specs = [EndpointSpec("embed", "tei-embedding", "model"), EndpointSpec("hashing", "tei-embedding", "deterministic")]
    with LocalEndpoint(ServerConfig(endpoints=specs)) as server:
        yield server


@pytest.fixture
def embeddings(retrieval_local) -> SagemakerEndpointEmbeddings:
    return SagemakerEndpointEmbeddings(endpoint_name="embed", session=Session.local(retrieval_local.url))


def test_second_question_embeds_nothing_but_the_question(retrieval_local, embeddings, tmp_path):
    chunks = [Chunk(t, "notes.txt", i) for i, t in enumerate([*_paragraphs(60), NEEDLE])]
    index = VectorIndex(tmp_path / "index.sqlite", space=embeddings.identity)
    before = retrieval_local.calls["embed"]
    first = index.embed_missing(chunks, embeddings.embed_documents)
    assert (first.unique, first.cached, first.embedded) == (61, 0, 61)
    assert retrieval_local.calls["embed"] - before == 2  # 61 texts, 32 a request

    again = VectorIndex(tmp_path / "index.sqlite", space=embeddings.identity)  # a new kernel, same file
    before = retrieval_local.calls["embed"]
    second = again.embed_missing(chunks, embeddings.embed_documents)
    hits = again.search(embeddings.embed_query(QUESTION), k=3, among=chunks)
    assert (second.cached, second.embedded) == (61, 0)
    assert retrieval_local.calls["embed"] - before == 1  # the question only
    assert hits[0].chunk == chunks[-1]
    assert hits[0].score > hits[1].score >= hits[2].score


def test_a_changed_file_re_embeds_only_its_new_chunks(embeddings, tmp_path):
    index = VectorIndex(tmp_path / "index.sqlite", space=embeddings.identity)
    old = [Chunk(t, "a.txt", i) for i, t in enumerate(_paragraphs(10))]
    index.embed_missing(old, embeddings.embed_documents)
    changed = [*old[:8], Chunk("A new paragraph about the lighthouse.", "a.txt", 8)]
    sent: list[list[str]] = []

    def recording(texts: list[str]) -> list[list[float]]:
        sent.append(texts)
        return embeddings.embed_documents(texts)

    stats = index.embed_missing(changed, recording)
    assert sent == [["A new paragraph about the lighthouse."]]
    assert (stats.cached, stats.embedded) == (8, 1)
    assert len(index) == 11  # old vectors stay for files that still hold them


def test_search_among_only_the_given_chunks(embeddings, tmp_path):
    index = VectorIndex(tmp_path / "i.sqlite", space=embeddings.identity)
    all_chunks = [Chunk(t) for t in [*_paragraphs(20), NEEDLE]]
    index.embed_missing(all_chunks, embeddings.embed_documents)
    query = embeddings.embed_query(QUESTION)
    others = all_chunks[:20]
    hits = index.search(query, k=50, among=others)
    assert len(hits) == 20 and all(h.chunk in others for h in hits)
    assert index.search(query, k=1)[0].chunk.text == NEEDLE  # the whole space, texts read back from disk


def test_duplicate_texts_are_embedded_and_returned_once(embeddings, tmp_path):
    index = VectorIndex(tmp_path / "i.sqlite", space=embeddings.identity)
    chunks = [Chunk(NEEDLE, "a.txt"), Chunk(NEEDLE, "b.txt"), Chunk("other text")]
    stats = index.embed_missing(chunks, embeddings.embed_documents)
    assert (stats.chunks, stats.unique, stats.embedded) == (3, 2, 2)
    hits = index.search(embeddings.embed_query(QUESTION), k=3, among=chunks)
    assert [h.chunk.source for h in hits] == ["a.txt", ""]


def test_spaces_never_mix_and_dimensions_are_checked(retrieval_local, embeddings, tmp_path):
    hashing = SagemakerEndpointEmbeddings(endpoint_name="hashing", session=Session.local(retrieval_local.url))
    path = tmp_path / "i.sqlite"
    chunks = [Chunk(t) for t in _paragraphs(5)]
    VectorIndex(path, space=embeddings.identity).embed_missing(chunks, embeddings.embed_documents)
    other = VectorIndex(path, space=hashing.identity)
    assert other.embed_missing(chunks, hashing.embed_documents).embedded == 5
    assert other.dims() == 16 and VectorIndex(path, space=embeddings.identity).dims() == 384
    mixed = VectorIndex(path, space=embeddings.identity)
    with pytest.raises(VectorIndexError, match="holds 384-dimension vectors"):
        mixed.embed_missing([Chunk("new text")], hashing.embed_documents)
    with pytest.raises(VectorIndexError, match="has 16 dimensions"):
        mixed.search(hashing.embed_query("x"), k=1, among=chunks)


def test_unembedded_chunks_and_wrong_vector_counts_are_errors(tmp_path):
    index = VectorIndex(tmp_path / "i.sqlite", space="s")
    index.embed_missing([Chunk("a")], lambda texts: [[1.0, 0.0]] * len(texts))
    with pytest.raises(VectorIndexError, match="1 of the chunks have no vector"):
        index.search([1.0, 0.0], k=1, among=[Chunk("a"), Chunk("b")])
    with pytest.raises(VectorIndexError, match="returned 1 vectors for 2 texts"):
        index.embed_missing([Chunk("b"), Chunk("c")], lambda texts: [[1.0, 0.0]])
    assert len(index) == 1


def test_top_k_is_the_exact_cosine_ranking(tmp_path):
    rng = np.random.default_rng(7)
    vectors = rng.standard_normal((500, 24)).astype(np.float32)
    chunks = [Chunk(f"chunk {i}") for i in range(500)]
    lookup = {c.text: v for c, v in zip(chunks, vectors, strict=True)}
    index = VectorIndex(tmp_path / "i.sqlite", space="random")
    index.embed_missing(chunks, lambda texts: [lookup[t] for t in texts])
    query = rng.standard_normal(24)
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    expected = np.argsort(-(unit @ (query / np.linalg.norm(query))))[:10]
    hits = index.search(query, k=10, among=chunks)
    assert [h.chunk.text for h in hits] == [f"chunk {i}" for i in expected]
    subset = chunks[::7]
    sub_hits = index.search(query, k=3, among=subset)  # the small-subset path gives the same ranking
    sub_expected = sorted(subset, key=lambda c: -float(unit[int(c.text.split()[1])] @ query))[:3]
    assert [h.chunk for h in sub_hits] == sub_expected


def _writer(args: tuple[str, int]) -> int:
    path, seed = args
    index = VectorIndex(path, space="shared")
    total = 0
    for round_ in range(10):  # overlapping chunks: both processes insert some of the same hashes
        chunks = [Chunk(f"text {i}") for i in range(round_ * 20, round_ * 20 + 30)]
        total += index.embed_missing(chunks, lambda texts: [[float(len(t)), 1.0, float(seed)] for t in texts]).embedded
    return total


def test_two_processes_fill_one_index_without_losing_or_breaking_rows(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        embedded = pool.map(_writer, [(path, 1), (path, 2)])
    index = VectorIndex(path, space="shared")
    assert len(index) == 210 and sum(embedded) >= 210
    with sqlite3.connect(path) as db:
        sizes = {row[0] for row in db.execute("SELECT length(vector) FROM vectors")}
        hashes = {row[0] for row in db.execute("SELECT hash FROM vectors")}
    assert sizes == {12} and hashes == {chunk_hash(f"text {i}") for i in range(210)}
    assert len(index.search([1.0, 0.0, 0.0], k=5)) == 5


def test_the_default_path_is_in_the_sm_magic_home(tmp_path, monkeypatch):
    monkeypatch.setenv("SM_MAGIC_HOME", str(tmp_path))
    index = VectorIndex(space="s")
    index.embed_missing([Chunk("x")], lambda texts: [[1.0]])
    assert index.path == Path(tmp_path) / "embeddings.sqlite" and index.path.exists()


def test_a_reader_sees_vectors_another_writer_added_later(tmp_path):
    reader = VectorIndex(tmp_path / "i.sqlite", space="s")
    writer = VectorIndex(tmp_path / "i.sqlite", space="s")
    writer.embed_missing([Chunk("first")], lambda texts: [[1.0, 0.0]])
    assert [h.chunk.text for h in reader.search([1.0, 0.0], k=5)] == ["first"]
    writer.embed_missing([Chunk("second")], lambda texts: [[0.0, 1.0]])
    assert [h.chunk.text for h in reader.search([0.0, 1.0], k=5)] == ["second", "first"]
