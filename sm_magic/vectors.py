"""Chunk vectors on disk, keyed by (embedding endpoint identity, SHA-256 of the chunk text), and top-K search.

Asking a second question over the same files embeds nothing but the question; a changed file only
embeds its chunks whose text is new. Vectors of two embedding endpoints (or handlers, or model
kwargs) are never mixed: each identity is its own ``space``.

**Storage: SQLite** (``embeddings.sqlite`` in the sm_magic home, beside the journal), one row per
vector (float32 blob). Chosen over ``.npy`` files because the index grows a few chunks at a time and
two kernels may add to it at once: SQLite in WAL mode gives atomic, concurrent inserts and readers
that never see half a write, with no lock files or rewrite-and-rename of a growing matrix. Each
process keeps the rows it has read as one in-memory float32 matrix and reads only rows it lacks.

**Search: numpy brute force** (one matrix-vector product + ``argpartition``), exact. Measured for
top-5 over 100,000 × 384 float32 vectors on the 2-core build machine (shared with other work, so
numbers moved with the load): numpy 16 ms (42–49 ms at load average 9), usearch's exact SIMD
search 12 ms (24 ms), faiss-cpu ``IndexFlatIP`` 40 ms (128 ms), usearch HNSW 1.3 ms but 6 minutes
to build and 8 % recall@5 on random vectors. numpy meets the 20 ms goal, is exact, and needs no
extra dependency; usearch's ~1.4× does not earn one. (The index of a 2 MB document set holds
~2,000 vectors: well under 1 ms.) ``bench/embeddings.py`` measures it again on your machine.
"""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sm_magic.chunks import Chunk
from sm_magic.errors import SageMakerError

EmbedFn = Callable[[list[str]], Sequence[Sequence[float]]]
_IN_BATCH = 500  # hashes per SELECT ... IN (...)


def default_path() -> Path:
    return Path(os.environ.get("SM_MAGIC_HOME", "~/.sm_magic")).expanduser() / "embeddings.sqlite"


class VectorIndexError(SageMakerError):
    """The vector index cannot do what was asked (dimension mismatch, wrong vector count)."""


@dataclass(frozen=True)
class Hit:
    chunk: Chunk
    score: float  # cosine similarity


@dataclass
class EmbedStats:
    """What ``embed_missing`` did: chunks seen, distinct texts, already stored, embedded now."""

    chunks: int = 0
    unique: int = 0
    cached: int = 0
    embedded: int = 0
    seconds: float = 0.0


def _unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


class VectorIndex:
    """``VectorIndex(path, space=embeddings.identity)``; ``embed_missing`` then ``search``."""

    def __init__(self, path: str | Path | None = None, space: str = "default"):
        self.path = Path(path) if path is not None else default_path()
        self.space = space
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._pos: dict[str, int] = {}  # hash → row of the in-memory matrix
        self._order: list[str] = []  # row → hash
        self._rows: list[np.ndarray] = []
        self._matrix = np.zeros((0, 0), np.float32)
        self._texts: dict[str, str] = {}
        self._synced: int | None = None  # data_version when the whole space was last read

    def __repr__(self) -> str:
        return f"<VectorIndex {self.path} space={self.space!r}>"

    # -- storage -----------------------------------------------------------------------------
    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS vectors (space TEXT NOT NULL, hash TEXT NOT NULL, "
                       "dims INTEGER NOT NULL, vector BLOB NOT NULL, text TEXT NOT NULL, created REAL NOT NULL, "
                       "PRIMARY KEY (space, hash)) WITHOUT ROWID")
            self._db = db
        return self._db

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None

    def __len__(self) -> int:
        with self._lock:
            return self._conn().execute("SELECT count(*) FROM vectors WHERE space = ?", (self.space,)).fetchone()[0]

    def dims(self) -> int | None:
        with self._lock:
            row = self._conn().execute("SELECT dims FROM vectors WHERE space = ? LIMIT 1", (self.space,)).fetchone()
        return row[0] if row else None

    def _fetch(self, hashes: list[str] | None) -> None:
        """Read rows this process lacks into the matrix (all of the space when ``hashes`` is None)."""
        db = self._conn()
        if hashes is None:
            version = db.execute("PRAGMA data_version").fetchone()[0]  # changes when another connection commits
            if version == self._synced:
                return
            self._synced = version
            rows = db.execute("SELECT hash, vector, text FROM vectors WHERE space = ?", (self.space,)).fetchall()
        else:
            rows = []
            wanted = [h for h in dict.fromkeys(hashes) if h not in self._pos]
            for i in range(0, len(wanted), _IN_BATCH):
                part = wanted[i:i + _IN_BATCH]
                rows += db.execute(f"SELECT hash, vector, text FROM vectors WHERE space = ? AND hash IN "
                                   f"({','.join('?' * len(part))})", (self.space, *part)).fetchall()
        for h, blob, text in rows:
            if h not in self._pos:
                self._pos[h] = len(self._pos)
                self._order.append(h)
                self._rows.append(np.frombuffer(blob, np.float32))
                self._texts[h] = text

    def _stored(self) -> np.ndarray:
        if len(self._rows) != self._matrix.shape[0]:
            self._matrix = np.vstack(self._rows) if self._rows else np.zeros((0, 0), np.float32)
        return self._matrix

    # -- API ---------------------------------------------------------------------------------
    def embed_missing(self, chunks: Iterable[Chunk], embed_fn: EmbedFn) -> EmbedStats:
        """Embed (with ``embed_fn(texts) -> vectors``) only the chunks whose text this space lacks."""
        start = time.perf_counter()
        chunks = list(chunks)
        texts = {c.hash: c.text for c in chunks}
        stats = EmbedStats(chunks=len(chunks), unique=len(texts))
        with self._lock:
            self._fetch(list(texts))
        missing = [h for h in texts if h not in self._pos]
        stats.cached = stats.unique - len(missing)
        if missing:
            vectors = np.asarray(embed_fn([texts[h] for h in missing]), np.float32)
            if vectors.ndim != 2 or vectors.shape[0] != len(missing):
                raise VectorIndexError(f"The embeddings call returned {len(vectors)} vectors for {len(missing)} texts.")
            known = self.dims()
            if known is not None and known != vectors.shape[1]:
                raise VectorIndexError(f"The index space {self.space!r} holds {known}-dimension vectors; the "
                                  f"embeddings endpoint returned {vectors.shape[1]} dimensions.",
                                  hint="Use another space (endpoint identity) or another index file.")
            vectors = _unit(vectors)
            now = time.time()
            with self._lock:
                db = self._conn()
                db.execute("BEGIN IMMEDIATE")
                try:
                    db.executemany("INSERT OR IGNORE INTO vectors VALUES (?, ?, ?, ?, ?, ?)",
                                   [(self.space, h, vectors.shape[1], v.tobytes(), texts[h], now)
                                    for h, v in zip(missing, vectors, strict=True)])
                    db.execute("COMMIT")
                except BaseException:
                    db.execute("ROLLBACK")
                    raise
                self._fetch(missing)
            stats.embedded = len(missing)
        stats.seconds = time.perf_counter() - start
        return stats

    def search(self, query_vec: Sequence[float], k: int = 4, among: Sequence[Chunk] | None = None) -> list[Hit]:
        """The ``k`` chunks most similar to the query (cosine), best first.

        ``among``: only these chunks (e.g. the chunks of the files asked about); their vectors must have
        been embedded. Chunks with the same text count once (the first is returned).
        """
        if k < 1:
            raise ValueError("k must be at least 1")
        first: dict[str, Chunk] = {}  # hash → the first chunk with that text
        with self._lock:
            if among is None:
                self._fetch(None)
            else:
                for c in among:
                    first.setdefault(c.hash, c)
                self._fetch(list(first))
                absent = [h for h in first if h not in self._pos]
                if absent:
                    raise VectorIndexError(f"{len(absent)} of the chunks have no vector in this index: "
                                           "embed them first (embed_missing).")
            matrix, order, texts = self._stored(), self._order, self._texts
        if matrix.shape[0] == 0 or (among is not None and not first):
            return []
        query = _unit(np.asarray(query_vec, np.float32).reshape(-1))
        if matrix.shape[1] != query.shape[0]:
            raise VectorIndexError(f"The query has {query.shape[0]} dimensions; the index holds {matrix.shape[1]}.")
        if among is None:
            rows = np.arange(matrix.shape[0])
            scores = matrix @ query
        else:
            rows = np.fromiter((self._pos[h] for h in first), np.int64, len(first))
            scores = (matrix @ query)[rows] if len(rows) * 4 > matrix.shape[0] else matrix[rows] @ query
        k = min(k, len(rows))
        top = np.argpartition(-scores, k - 1)[:k]
        top = top[np.argsort(-scores[top], kind="stable")]
        hits = []
        for i in top:
            h = order[rows[i]]
            hits.append(Hit(first[h] if among is not None else Chunk(texts[h]), float(scores[i])))
        return hits
