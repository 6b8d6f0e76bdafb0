"""The real embedding model (all-MiniLM-L6-v2 in numpy) and the embedding containers, through real boto3."""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import boto3
import numpy as np
import pytest
from botocore.exceptions import ClientError

from sm_magic.local import EndpointSpec, LocalEndpoint, ServerConfig
from sm_magic.local.backends import EmbeddingBackend, HashingEmbedder, make_backend, make_embedder
from sm_magic.local.embedder import (
    EMBEDDING_INSTALL_HINT,
    MiniLMEmbedder,
    embedding_model_available,
    find_embedding_zip,
    shared_embedder,
    unpacked,
)
from sm_magic.local.embedding_containers import EmbeddingRequest

# sentence-transformers' README / quickstart, model all-MiniLM-L6-v2: model.similarity(embeddings, embeddings)
# prints tensor([[1.0000, 0.6660, 0.1046], [0.6660, 1.0000, 0.1411], [0.1046, 0.1411, 1.0000]]).
README_SENTENCES = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
README_SIMILARITIES = np.array([[1.0, 0.6660, 0.1046], [0.6660, 1.0, 0.1411], [0.1046, 0.1411, 1.0]])

QUESTION = "How long was Elizabeth hospitalized?"
ANSWER = "Therefore, Peter stayed with her at the hospital for 3 days without leaving."
UNRELATED = "The quarterly memo covers budget planning for the marketing team."


@pytest.fixture(scope="module")
def model() -> MiniLMEmbedder:
    """The real model; fails (never skips) when it is not installed."""
    if not embedding_model_available():
        pytest.fail(EMBEDDING_INSTALL_HINT)
    return shared_embedder()


@pytest.fixture(scope="module")
def embed_server(model: MiniLMEmbedder) -> Iterator[LocalEndpoint]:
    specs = [EndpointSpec("tei", "tei-embedding", "model"), EndpointSpec("jumpstart", "jumpstart-embedding", "model"),
             EndpointSpec("custom", "custom-embedding", "model"),
             EndpointSpec("tei-hashing", "tei-embedding", "deterministic")]
    with LocalEndpoint(ServerConfig(endpoints=specs)) as server:
        yield server


@pytest.fixture(scope="module")
def runtime(embed_server: LocalEndpoint):
    return boto3.client("sagemaker-runtime", endpoint_url=embed_server.url, region_name="us-east-1",
                        aws_access_key_id="local-access-key", aws_secret_access_key="local-secret")


def _call(runtime, endpoint: str, body: bytes | str, content_type: str = "application/json"):
    response = runtime.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType=content_type)
    return json.loads(response["Body"].read())


# -- the model --------------------------------------------------------------------------------
def test_reproduces_the_published_sentence_transformers_similarities(model):
    vectors = model.embed(README_SENTENCES)
    assert vectors.shape == (3, 384)
    np.testing.assert_allclose(vectors @ vectors.T, README_SIMILARITIES, atol=1e-3)


def test_a_question_is_closer_to_its_answer_than_to_an_unrelated_sentence(model):
    q, answer, unrelated = model.embed([QUESTION, ANSWER, UNRELATED])
    assert q @ answer > q @ unrelated + 0.2


def test_padding_in_a_batch_does_not_change_a_vector(model):
    alone = model.embed([README_SENTENCES[0]])[0]
    long_text = " ".join(["a much longer neighbour sentence about something else entirely"] * 8)
    batched = model.embed([long_text, README_SENTENCES[0], "x"])[1]
    np.testing.assert_allclose(alone, batched, atol=1e-5)


def test_texts_beyond_256_tokens_are_truncated_as_sentence_transformers_does(model):
    base = " ".join(f"word{i}" for i in range(400))
    assert model.count_tokens(base) > model.max_tokens
    a, b = model.embed([base, base + " and a different ending that falls past the limit"])
    np.testing.assert_allclose(a, b, atol=1e-6)
    short_a, short_b = model.embed(["the same start", "the same start, then more"])
    assert short_a @ short_b < 0.999  # below the limit, the ending counts


def test_unnormalised_vectors_point_the_same_way(model):
    raw = model.embed(README_SENTENCES[:1], normalize=False)[0]
    unit = model.embed(README_SENTENCES[:1])[0]
    assert abs(np.linalg.norm(raw) - 1.0) > 0.01
    np.testing.assert_allclose(raw / np.linalg.norm(raw), unit, atol=1e-6)


def test_empty_input_gives_no_vectors(model):
    assert model.embed([]).shape == (0, 384)


def _unpack(args: tuple[str, str]) -> str:
    zip_path, cache = args
    return str(unpacked(Path(zip_path), Path(cache)))


def test_two_processes_unpack_the_model_into_one_complete_directory(model, tmp_path):
    zip_path = find_embedding_zip()
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        first, second = pool.map(_unpack, [(str(zip_path), str(tmp_path))] * 2)
    assert first == second
    target = Path(first)
    assert (target / "model.safetensors").stat().st_size == (model.model_dir / "model.safetensors").stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == [target.name]  # no half-unpacked leftovers
    mtime = (target / "model.safetensors").stat().st_mtime_ns
    assert unpacked(zip_path, tmp_path) == target
    assert (target / "model.safetensors").stat().st_mtime_ns == mtime  # unpacked once
    again = MiniLMEmbedder(target).embed(README_SENTENCES[:1])
    np.testing.assert_allclose(again, model.embed(README_SENTENCES[:1]), atol=1e-6)


# -- backends ---------------------------------------------------------------------------------
def test_embedding_backends_by_kind(model):
    assert isinstance(make_embedder("deterministic"), HashingEmbedder)
    assert make_embedder("model") is model
    backend = make_backend("deterministic", embedding=True)
    assert isinstance(backend, EmbeddingBackend)
    request = EmbeddingRequest(prompt="a\nb", texts=["a b", "c"])
    assert list(backend.generate(request)) == []
    assert [len(v) for v in request.vectors] == [16, 16]
    with pytest.raises(ValueError, match="unknown backend"):
        make_embedder("gpu")


# -- the containers through boto3 ---------------------------------------------------------------
def test_tei_answers_the_models_vectors_for_a_list_and_for_one_text(runtime, model):
    vectors = _call(runtime, "tei", json.dumps({"inputs": README_SENTENCES}))
    np.testing.assert_allclose(np.array(vectors), model.embed(README_SENTENCES), atol=1e-6)
    single = _call(runtime, "tei", json.dumps({"inputs": README_SENTENCES[0]}))
    assert len(single) == 1 and len(single[0]) == 384


def test_tei_normalize_false_answers_raw_mean_pooled_vectors(runtime):
    raw = _call(runtime, "tei", json.dumps({"inputs": ["hello there"], "normalize": False}))[0]
    assert abs(np.linalg.norm(raw) - 1.0) > 0.01


def _model_error(runtime, endpoint: str, body: bytes | str, content_type: str = "application/json") -> dict:
    with pytest.raises(ClientError) as info:
        runtime.invoke_endpoint(EndpointName=endpoint, Body=body, ContentType=content_type)
    assert info.value.response["Error"]["Code"] == "ModelError"
    return info.value.response


def test_tei_refuses_more_than_32_texts_with_its_413_validation_body(runtime):
    response = _model_error(runtime, "tei", json.dumps({"inputs": ["t"] * 33}))
    assert response["OriginalStatusCode"] == 413
    assert json.loads(response["OriginalMessage"]) == {
        "error": "batch size 33 > maximum allowed batch size 32", "error_type": "validation"}
    assert len(_call(runtime, "tei", json.dumps({"inputs": ["t"] * 32}))) == 32


def test_tei_refuses_an_empty_batch_and_a_body_without_inputs(runtime):
    empty = _model_error(runtime, "tei", json.dumps({"inputs": []}))
    assert empty["OriginalStatusCode"] == 400 and "cannot be empty" in empty["OriginalMessage"]
    missing = _model_error(runtime, "tei", json.dumps({"text": "x"}))
    assert missing["OriginalStatusCode"] == 422 and "missing field `inputs`" in missing["OriginalMessage"]
    wrong = _model_error(runtime, "tei", json.dumps({"inputs": [1, 2]}))
    assert wrong["OriginalStatusCode"] == 422


def test_jumpstart_json_and_raw_text_shapes(runtime, model):
    batch = _call(runtime, "jumpstart", json.dumps({"text_inputs": README_SENTENCES[:2]}))
    np.testing.assert_allclose(np.array(batch["embedding"]), model.embed(README_SENTENCES[:2]), atol=1e-6)
    one = _call(runtime, "jumpstart", README_SENTENCES[2].encode(), "application/x-text")
    np.testing.assert_allclose(np.array(one["embedding"]), model.embed(README_SENTENCES[2:])[0], atol=1e-6)


def test_jumpstart_refuses_other_content_types_and_bodies(runtime):
    assert _model_error(runtime, "jumpstart", b"<x/>", "application/xml")["OriginalStatusCode"] == 415
    assert _model_error(runtime, "jumpstart", json.dumps({"inputs": ["x"]}))["OriginalStatusCode"] == 400


def test_custom_container_answers_vectors_under_its_key(runtime):
    answer = _call(runtime, "custom", json.dumps({"inputs": ["foo", "bar"]}))
    assert [len(v) for v in answer["vectors"]] == [384, 384]


def test_deterministic_backend_keeps_the_16_dimension_hashing_vectors(runtime):
    vectors = _call(runtime, "tei-hashing", json.dumps({"inputs": ["a short sentence", "a short sentence"]}))
    assert [len(v) for v in vectors] == [16, 16] and vectors[0] == vectors[1]
