"""SagemakerEndpointEmbeddings and the embeddings handlers, through real boto3 against the local endpoint."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import boto3
import numpy as np
import pytest

from sm_magic.embeddings import SagemakerEndpointEmbeddings
from sm_magic.errors import HandlerError, ModelError
from sm_magic.handlers.embeddings import (
    JSONTemplateEmbeddings,
    JumpStartEmbeddings,
    TEIEmbeddings,
    embeddings_handler,
)
from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig
from sm_magic.local.embedder import EMBEDDING_INSTALL_HINT, embedding_model_available, shared_embedder
from sm_magic.session import Session
from tests.conftest import watch_in_flight


@pytest.fixture(scope="module")
def embed_local() -> Iterator[LocalEndpoint]:
    """Embedding endpoints with the real model (fails, never skips, when it is not installed)."""
    if not embedding_model_available():
        pytest.fail(EMBEDDING_INSTALL_HINT)
    specs = [EndpointSpec("tei", "tei-embedding", "model"), EndpointSpec("jumpstart", "jumpstart-embedding", "model"),
             EndpointSpec("custom", "custom-embedding", "model"),
             EndpointSpec("hashing", "tei-embedding", "deterministic")]
    with LocalEndpoint(ServerConfig(endpoints=specs)) as server:
        yield server


@pytest.fixture
def embed_session(embed_local: LocalEndpoint) -> Session:
    return Session.local(embed_local.url)


def _calls(server: LocalEndpoint, name: str) -> int:
    return server.calls[name]


TEXTS = [f"Paragraph {i}: the river flooded the valley in spring number {i}." for i in range(70)]


def test_embed_documents_batches_in_order_and_matches_the_model(embed_local, embed_session):
    embeddings = SagemakerEndpointEmbeddings(endpoint_name="tei", session=embed_session)
    before = _calls(embed_local, "tei")
    vectors = embeddings.embed_documents(TEXTS)
    assert _calls(embed_local, "tei") - before == 3  # 32 + 32 + 6
    np.testing.assert_allclose(np.array(vectors), shared_embedder().embed(TEXTS), atol=1e-6)


def test_embed_documents_reports_progress_and_honours_chunk_size(embed_local, embed_session):
    seen: list[tuple[int, int]] = []
    embeddings = SagemakerEndpointEmbeddings(endpoint_name="hashing", session=embed_session, max_concurrency=1)
    before = _calls(embed_local, "hashing")
    embeddings.embed_documents(TEXTS[:25], chunk_size=10, progress=lambda done, total: seen.append((done, total)))
    assert _calls(embed_local, "hashing") - before == 3
    assert seen == [(10, 25), (20, 25), (25, 25)]


def test_requests_run_concurrently_up_to_max_concurrency(embed_local, embed_session):
    with watch_in_flight(embed_local, "hashing", hold=0.05) as peak:
        SagemakerEndpointEmbeddings(endpoint_name="hashing", session=embed_session, max_concurrency=3,
                                    batch_size=2).embed_documents(TEXTS[:16])
    assert peak[0] == 3


def test_embed_query_and_the_async_variants(embed_session):
    embeddings = SagemakerEndpointEmbeddings(endpoint_name="jumpstart", content_handler="jumpstart-embedding",
                                             session=embed_session)
    query = embeddings.embed_query("How long was Elizabeth hospitalized?")
    assert len(query) == 384
    assert asyncio.run(embeddings.aembed_query("How long was Elizabeth hospitalized?")) == query
    docs = asyncio.run(embeddings.aembed_documents(["a", "b"]))
    assert docs == embeddings.embed_documents(["a", "b"])


def test_one_client_for_all_calls(embed_session):
    embeddings = SagemakerEndpointEmbeddings(endpoint_name="hashing", session=embed_session, batch_size=1)
    embeddings.embed_documents(TEXTS[:6])
    client = embed_session.runtime
    embeddings.embed_documents(TEXTS[:6])
    assert embed_session.runtime is client and embeddings.target().session is embed_session


def test_json_template_handler_for_another_container(embed_session):
    handler = JSONTemplateEmbeddings({"inputs": "{texts}"}, "vectors", batch_size=5)
    embeddings = SagemakerEndpointEmbeddings(endpoint_name="custom", content_handler=handler, session=embed_session)
    vectors = embeddings.embed_documents(TEXTS[:7])
    assert len(vectors) == 7 and len(vectors[0]) == 384


def test_a_wrong_response_path_is_a_handler_error_showing_the_body(embed_session):
    handler = JSONTemplateEmbeddings({"inputs": "{texts}"}, "embeddings")
    embeddings = SagemakerEndpointEmbeddings(endpoint_name="custom", content_handler=handler, session=embed_session)
    with pytest.raises(HandlerError) as info:
        embeddings.embed_query("x")
    assert "vectors at 'embeddings'" in info.value.explain() and '{"vectors"' in info.value.explain()


def test_too_many_texts_for_tei_is_a_model_error_with_tei_s_message(embed_session):
    embeddings = SagemakerEndpointEmbeddings(endpoint_name="tei", session=embed_session)
    with pytest.raises(ModelError) as info:
        embeddings.embed_documents(TEXTS[:40], chunk_size=40)
    assert info.value.original_status == 413
    assert "maximum allowed batch size 32" in info.value.explain()


def test_a_vector_count_mismatch_is_refused(embed_session):
    class OneVector:  # a LangChain handler that drops vectors
        content_type = accepts = "application/json"

        def transform_input(self, inputs, model_kwargs):
            return json.dumps({"inputs": inputs}).encode()

        def transform_output(self, output):
            return json.loads(output.read())["vectors"][:1]

    embeddings = SagemakerEndpointEmbeddings(endpoint_name="custom", content_handler=OneVector(), session=embed_session)
    with pytest.raises(HandlerError, match="sent 3 texts, got 1 vectors"):
        embeddings.embed_documents(["a", "b", "c"])


def test_handler_lookup_and_the_langchain_duck_type():
    assert isinstance(embeddings_handler(None), TEIEmbeddings)
    assert isinstance(embeddings_handler("jumpstart-embedding"), JumpStartEmbeddings)
    with pytest.raises(ValueError, match="unknown embeddings handler"):
        embeddings_handler("nope")
    with pytest.raises(TypeError, match="not an embeddings content handler"):
        embeddings_handler(object())
    tei = TEIEmbeddings()
    assert json.loads(tei.transform_input(["a", "b"], {})) == {"inputs": ["a", "b"], "truncate": True}
    assert tei.transform_output(b"[[1, 2], [3, 4]]") == [[1, 2], [3, 4]]
    with pytest.raises(HandlerError, match="different lengths"):
        tei.decode(b"[[1, 2], [3]]")
    with pytest.raises(HandlerError, match="lists of finite numbers"):
        tei.decode(b'[[1, NaN]]')


def test_identity_changes_with_what_decides_the_vectors(embed_session):
    a = SagemakerEndpointEmbeddings(endpoint_name="tei", session=embed_session)
    assert a.identity == SagemakerEndpointEmbeddings(endpoint_name="tei", session=embed_session).identity
    assert a.identity != SagemakerEndpointEmbeddings(endpoint_name="hashing", session=embed_session).identity
    assert a.identity != SagemakerEndpointEmbeddings(endpoint_name="tei", session=embed_session,
                                                     model_kwargs={"normalize": False}).identity


# -- langchain-community's documented example, with only the import changed --------------------
def _documented_example(embeddings_class, base, region_name, client):
    """https://python.langchain.com/docs/integrations/text_embedding/sagemaker-endpoint (verbatim but the class)."""

    class ContentHandler(base):
        content_type = "application/json"
        accepts = "application/json"

        def transform_input(self, inputs: list[str], model_kwargs: dict) -> bytes:
            input_str = json.dumps({"inputs": inputs, **model_kwargs})
            return input_str.encode("utf-8")

        def transform_output(self, output: bytes) -> list[list[float]]:
            response_json = json.loads(output.read().decode("utf-8"))
            return response_json["vectors"]

    content_handler = ContentHandler()
    embeddings = embeddings_class(
        client=client,
        endpoint_name="custom",
        region_name=region_name,
        content_handler=content_handler,
    )
    query_result = embeddings.embed_query("foo")
    doc_results = embeddings.embed_documents(["foo"])
    return query_result, doc_results


def test_langchain_community_example_runs_with_only_the_import_changed(embed_local):
    from langchain_community.embeddings import SagemakerEndpointEmbeddings as CommunityEmbeddings
    from langchain_community.embeddings.sagemaker_endpoint import EmbeddingsContentHandler

    client = boto3.client("sagemaker-runtime", endpoint_url=embed_local.url, region_name="us-east-1",
                          aws_access_key_id="local-access-key", aws_secret_access_key="local-secret")
    ours = _documented_example(SagemakerEndpointEmbeddings, EmbeddingsContentHandler, "us-east-1", client)
    theirs = _documented_example(CommunityEmbeddings, EmbeddingsContentHandler, "us-east-1", client)
    assert ours == theirs
    assert len(ours[0]) == 384 and ours[1] == [ours[0]]
