"""The invoke path: request building, headers, dry runs, Result."""

from __future__ import annotations

import json

import pytest

from sm_magic.calls import build_request, invoke, stream
from sm_magic.errors import ConfigError
from sm_magic.handlers.registry import Registry
from sm_magic.options import InvokeOptions

REGISTRY = Registry()


def test_dry_run_shows_path_headers_and_body_without_sending(session, local):
    before = sum(local.calls.values())
    options = InvokeOptions(custom_attributes="accept_eula=true", inference_component="ic", target_variant="v1",
                            inference_id="run-1", session_id="NEW_SESSION")
    result = invoke(session, "tgi", "Hi {there}", REGISTRY.get("tgi"), {"max_new_tokens": 5}, options, dry_run=True)
    assert sum(local.calls.values()) == before
    text = result.request.describe()
    assert text.startswith("POST /endpoints/tgi/invocations\nContent-Type: application/json\nAccept: application/json")
    for header in ("X-Amzn-SageMaker-Custom-Attributes: accept_eula=true", "X-Amzn-SageMaker-Inference-Component: ic",
                   "X-Amzn-SageMaker-Target-Variant: v1", "X-Amzn-SageMaker-Inference-Id: run-1",
                   "X-Amzn-SageMaker-Session-Id: NEW_SESSION"):
        assert header in text
    assert '"inputs": "Hi {there}"' in text
    assert result.dry_run and "dry run" in result._repr_mimebundle_()[0]["text/markdown"]


def test_stream_request_uses_the_stream_route_and_accept_header():
    request = build_request("e", "hi", REGISTRY.get("lmi"), {}, stream=True)
    assert request.path == "POST /endpoints/e/invocations-response-stream"
    assert "X-Amzn-SageMaker-Accept: application/json" in request.describe()
    assert json.loads(request.body)["stream"] is True


def test_options_the_stream_api_lacks_are_refused_before_sending():
    with pytest.raises(ConfigError, match="--target-model cannot be used when streaming"):
        build_request("e", "hi", REGISTRY.get("tgi"), {}, InvokeOptions(target_model="m.tar.gz"), stream=True)


def test_result_carries_variant_latency_usage_and_session(session):
    result = invoke(session, "multi", "hi", REGISTRY.get("tgi"), {"details": True},
                    InvokeOptions(target_variant="blue", session_id="NEW_SESSION", custom_attributes="x=1"))
    assert result.variant == "blue"
    assert result.latency > 0
    assert result.usage == {"completion_tokens": 3}
    assert result.new_session_id and result.response_attributes == "x=1"
    data, metadata = result._repr_mimebundle_()
    assert data["text/plain"] == "You said: hi\n" + result.footer_line()
    assert "endpoint `multi`" in data["text/markdown"] and "3 tokens" in data["text/markdown"]
    assert metadata["sm_magic"]["variant"] == "blue"


def test_result_formats(session):
    result = invoke(session, "tgi", "hi", REGISTRY.get("tgi"))
    result.format = "json"
    assert result._repr_mimebundle_()[0]["application/json"]["text"] == "You said: hi"
    result.format = "text"
    assert set(result._repr_mimebundle_()[0]) == {"text/plain"}
    assert str(result) == "You said: hi" and "You said: hi" in repr(result)


def test_stream_close_keeps_what_arrived(session):
    s = stream(session, "long", "go", REGISTRY.get("lmi"), {"max_new_tokens": 500})
    iterator = iter(s)
    first = [next(iterator) for _ in range(3)]
    s.close()
    assert s.result.text == "".join(first)
    assert s.result.interrupted


def test_invoke_options_from_boto_names():
    options = InvokeOptions.from_boto({"CustomAttributes": "a=1", "InferenceComponentName": "ic"})
    assert options.custom_attributes == "a=1" and options.inference_component == "ic"
    with pytest.raises(ConfigError, match="Unknown invoke parameter"):
        InvokeOptions.from_boto({"Colour": "blue"})
