"""Retrieval QA: embed the chunks once (the on-disk index keeps them), send the K most relevant to the LLM.

A second question over the same documents embeds only the question; a changed file embeds only its
new chunks. The embeddings come from a SageMaker embeddings endpoint (TEI, JumpStart, or a handler).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sm_magic.qa import Plan, fill_fields


def retrieve(plan: Plan, question: str, template: str, embeddings: Any, index: Any, progress: bool = True,
             budget: Callable[[int, int], None] | None = None) -> Plan:
    """Fill a ``retrieve`` plan: embed what the index lacks, find the best ``plan.k`` chunks, build the prompt.

    ``budget(requests, texts)`` is asked before the embeddings endpoint is called (it raises to stop)."""
    from tqdm.auto import tqdm

    def embed(texts: list[str]) -> list[list[float]]:  # only what the index lacks
        if budget is not None:
            budget(embeddings.requests_for(len(texts)), len(texts))
        with tqdm(total=len(texts), desc="embed", disable=not progress, leave=False) as bar:
            return embeddings.embed_documents(texts, progress=lambda done, total: bar.update(done - bar.n))

    stats = index.embed_missing(plan.chunks, embed)
    plan.hits = index.search(embeddings.embed_query(question), plan.k, among=plan.chunks)
    plan.embedded = (f"{stats.embedded} chunks embedded, {stats.cached} already in the index "
                     f"({embeddings.endpoint_name})")
    context = "\n\n".join(hit.chunk.text for hit in plan.hits)
    plan.prompts = [fill_fields(template, context=context, question=question)]
    return plan
