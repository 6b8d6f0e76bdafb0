"""The same question over a 2 MB document set, by map-reduce and by retrieval: endpoint calls, wall time,
tokens sent. The LLM is the zero-cost deterministic backend (so the rows show sm_magic's and the
endpoint's work, not a model's); the embeddings come from the real all-MiniLM-L6-v2 behind the endpoint.

The documents are tests/test_retrieval.py's memos: 100 files that repeat one memo body, one paragraph
holding the answer. Their chunks repeat across files, so the index embeds ~100 distinct texts, not
~2,000: bench/embeddings.py's "index build" row measures embedding a set without repeats.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from bench.measure import Row
from tests.documents import QUESTION, write_documents


def rows(server: Any, total_bytes: int = 2_000_000) -> list[Row]:
    from sm_magic.chunks import estimate_tokens
    from sm_magic.resolve import CallSpec, SageMaker
    from sm_magic.runner import Runner
    from sm_magic.session import Session

    folder = Path(tempfile.mkdtemp(prefix="bench-qa-"))
    write_documents(folder, total_bytes)
    docs = str(folder / "*.txt")
    state = SageMaker(session=Session.local(server.url))
    runner = Runner(state)
    out = []
    for mode, extra in (("map-reduce", {}), ("retrieve", {"retrieve": 4, "embeddings": "embed"})):
        spec = CallSpec(QUESTION, {"endpoint": "fast", "handler": "tgi", "max_new_tokens": 64, "yes": True,
                                   "concurrency": 16, "mode": mode, **extra})
        before = dict(server.calls)
        start = time.perf_counter()
        result = runner.answer(spec, docs, mode=mode)
        took = time.perf_counter() - start
        llm = server.calls.get("fast", 0) - before.get("fast", 0)
        embed = server.calls.get("embed", 0) - before.get("embed", 0)
        sent = sum(estimate_tokens(p) for p in runner.plan(spec, docs, mode=mode).prompts)  # the map step's
        note = f"{llm} LLM calls, {embed} embedding requests; ~{sent:,} prompt tokens planned"
        if mode == "retrieve":
            note += f"; {result.data.get('embeddings', '')}"
        out.append(Row("document QA, 2 MB", f"{mode}: one question over {total_bytes / 1e6:.0f} MB",
                       f"{took:.2f} s", "", "", note))
    return out
