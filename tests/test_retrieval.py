"""Retrieval QA through the local endpoint: an embeddings endpoint, the on-disk index, one LLM call."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig
from sm_magic.local.backends import INSTALL_HINT, model_available
from sm_magic.local.embedder import EMBEDDING_INSTALL_HINT, embedding_model_available
from tests.documents import NEEDLE, QUESTION, write_documents


@pytest.fixture(scope="module")
def endpoints() -> Iterator[LocalEndpoint]:
    if not (model_available() and embedding_model_available()):
        pytest.fail(f"{INSTALL_HINT} {EMBEDDING_INSTALL_HINT}")
    specs = [EndpointSpec("llm", "tgi", "model"), EndpointSpec("embed", "tei-embedding", "auto"),
             EndpointSpec("fast-llm", "tgi", "deterministic"), EndpointSpec("fast-embed", "tei-embedding",
                                                                           "deterministic")]
    with LocalEndpoint(ServerConfig(endpoints=specs)) as server:
        yield server


def cell(ip, line: str, body: str):
    return ip.run_cell_magic("sagemaker", line, body)


@pytest.mark.model
def test_needle_in_2_mb_answered_with_one_llm_call_and_real_embeddings(ip, endpoints, tmp_path):
    ip.run_line_magic("sagemaker", f"session --local {endpoints.url}")
    docs = tmp_path / "memos"
    write_documents(docs, 2_000_000)
    assert sum(p.stat().st_size for p in docs.iterdir()) >= 2_000_000
    before = dict(endpoints.calls)
    line = f"llm --handler tgi --docs '{docs}/*.txt' --retrieve 4 --embeddings embed --max-new-tokens 40"
    result = cell(ip, line, QUESTION)
    assert endpoints.calls["llm"] - before.get("llm", 0) == 1  # one LLM call for 2 MB
    assert NEEDLE in result.sources[0]["text"], result.sources  # the best-scoring chunk holds the answer
    assert result.sources[0]["score"] > result.sources[-1]["score"] and len(result.sources) == 4
    assert result.data["mode"] == "retrieve" and "chunks embedded" in result.data["embeddings"]
    assert any(word in result.text.lower() for word in ("tin", "box", "lighthouse", "stairs")), result.text

    embedded = endpoints.calls["embed"]
    cell(ip, line, "What did the committee decide about tide tables?")
    assert endpoints.calls["embed"] - embedded == 1  # a second question embeds only itself

    (docs / "memo-005.txt").write_text("File 5 was rewritten: the ferry timetable moved to Tuesdays.")
    embedded = endpoints.calls["embed"]
    again = cell(ip, line, QUESTION)
    assert endpoints.calls["embed"] - embedded == 2  # the changed file's new chunk, then the question
    assert NEEDLE in again.sources[0]["text"]


def test_dry_run_shows_the_retrieved_chunks_and_the_prompt_without_calling_the_llm(ip, endpoints, tmp_path):
    ip.run_line_magic("sagemaker", f"session --local {endpoints.url}")
    docs = tmp_path / "small"
    write_documents(docs, 200_000)
    before = endpoints.calls["fast-llm"]
    shown = cell(ip, f"fast-llm --handler tgi --docs '{docs}/*.txt' --retrieve 3 --embeddings fast-embed --dry-run",
                 QUESTION)
    text = repr(shown)
    assert "mode: retrieve" in text and "Question: Where is the spare key" in text
    assert text.count("memo-") >= 3 and endpoints.calls["fast-llm"] == before


def test_auto_picks_retrieval_when_an_embeddings_endpoint_is_configured(ip, endpoints, tmp_path):
    ip.run_line_magic("sagemaker", f"session --local {endpoints.url}")
    docs = tmp_path / "auto"
    write_documents(docs, 100_000)
    plan = cell(ip, f"fast-llm --handler tgi --docs '{docs}/*.txt' --dry-run", QUESTION)
    assert "mode: map-reduce (" in repr(plan) and "no embeddings endpoint" in repr(plan)
    ip.run_line_magic("sagemaker", "config embeddings=fast-embed")
    plan = cell(ip, f"fast-llm --handler tgi --docs '{docs}/*.txt' --dry-run", QUESTION)
    assert "mode: retrieve (" in repr(plan) and "an embeddings endpoint is set" in repr(plan)
    result = cell(ip, f"fast-llm --handler tgi --docs '{docs}/*.txt'", QUESTION)
    assert result.data["mode"] == "retrieve" and len(result.sources) == 4


def test_retrieval_without_an_embeddings_endpoint_says_what_to_do(ip, endpoints, tmp_path):
    from sm_magic.errors import ConfigError

    ip.run_line_magic("sagemaker", f"session --local {endpoints.url}")
    docs = tmp_path / "none"
    write_documents(docs, 50_000)
    with pytest.raises(ConfigError, match="--embeddings ENDPOINT"):
        cell(ip, f"fast-llm --handler tgi --docs '{docs}/*.txt' --retrieve 2", QUESTION)


def test_embedding_requests_count_against_the_call_budget(ip, endpoints, tmp_path):
    from sm_magic.errors import ConfigError

    ip.run_line_magic("sagemaker", f"session --local {endpoints.url}")
    ip.run_line_magic("sagemaker", "config max_calls=2")
    docs = tmp_path / "budget"
    write_documents(docs, 300_000)
    line = f"fast-llm --handler tgi --docs '{docs}/*.txt' --retrieve 3 --embeddings fast-embed"
    before = endpoints.calls["fast-embed"]
    with pytest.raises(ConfigError, match=r"would make \d+ calls to fast-embed, above the budget of 2"):
        cell(ip, line, QUESTION)
    assert endpoints.calls["fast-embed"] == before  # nothing embedded, nothing billed
    result = cell(ip, line + " --yes", QUESTION)
    assert result.data["mode"] == "retrieve" and endpoints.calls["fast-embed"] > before + 2
