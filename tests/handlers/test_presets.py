"""Every preset against the local endpoint's matching container, streamed and not."""

from __future__ import annotations

import json

import pytest

from sm_magic.calls import invoke, stream
from sm_magic.errors import ConfigError, HandlerError
from sm_magic.handlers import JSONTemplate, Registry
from sm_magic.handlers.base import Body, LLMContentHandler, adapt
from sm_magic.handlers.detect import detect
from sm_magic.local import Fault
from tests.conftest import SEED_PROMPT

REGISTRY = Registry()
EXPECTED = "Therefore, Peter stayed with her at the hospital for 3 days without leaving."
TEXT_PRESETS = ["tgi", "tgi-messages", "lmi", "lmi-chat", "llama2-chat", "flan-t5"]


@pytest.mark.parametrize("preset", TEXT_PRESETS)
def test_preset_round_trips(session, preset):
    result = invoke(session, preset, SEED_PROMPT, REGISTRY.get(preset), {"max_new_tokens": 64, "temperature": 0})
    assert result.text == EXPECTED
    assert result.handler == preset


@pytest.mark.parametrize("preset", TEXT_PRESETS)
def test_preset_round_trips_streaming(session, preset):
    handler = REGISTRY.get(preset)
    s = stream(session, preset, SEED_PROMPT, handler, {"max_new_tokens": 64})
    chunks = list(s)
    assert "".join(chunks) == EXPECTED
    assert s.result.text == EXPECTED and s.result.streamed and not s.result.interrupted
    if handler.streams:  # token streaming: one chunk per token
        assert len(chunks) == len(EXPECTED.split())


def test_chat_presets_report_usage(session):
    result = invoke(session, "tgi-messages", "hello", REGISTRY.get("tgi-messages"))
    assert result.usage["completion_tokens"] == len(result.text.split())
    assert result.usage["prompt_tokens"] > 0


def test_stop_and_max_new_tokens_reach_the_container(session):
    capped = invoke(session, "lmi", SEED_PROMPT, REGISTRY.get("lmi"), {"max_new_tokens": 3})
    assert capped.text == "Therefore, Peter stayed"
    stopped = invoke(session, "tgi", SEED_PROMPT, REGISTRY.get("tgi"), {"stop": [" hospital"]})
    assert stopped.text == "Therefore, Peter stayed with her at the"


def test_embedding_preset_returns_the_vector(session):
    result = invoke(session, "embedding", "a short sentence", REGISTRY.get("embedding"))
    assert isinstance(result.data, list) and len(result.data) == 16
    assert result.text == "[embedding: 16 dimensions]"
    assert invoke(session, "embedding", "a short sentence", REGISTRY.get("embedding")).data == result.data


def test_llama2_preset_sends_accept_eula(session):
    request = invoke(session, "llama2-chat", "hi", REGISTRY.get("llama2-chat"), dry_run=True).request
    assert request.headers["X-Amzn-SageMaker-Custom-Attributes"] == "accept_eula=true"
    assert json.loads(request.body)["inputs"] == [[{"role": "user", "content": "hi"}]]


def test_malformed_body_is_a_handler_error_with_the_body_head(session, local):
    local.inject("faulty", Fault("malformed"))
    with pytest.raises(HandlerError) as info:
        invoke(session, "faulty", SEED_PROMPT, REGISTRY.get("tgi"))
    assert "Content handler 'tgi' failed" in info.value.explain()
    assert '{"unexpected": "shape"' in info.value.explain()


def test_answer_of_another_shape_names_the_expected_one(session):
    handler = JSONTemplate({"text_inputs": "{prompt}"}, "[0].generated_text", name="wrong-path")
    with pytest.raises(HandlerError) as info:
        invoke(session, "flan-t5", "hi", handler)
    assert "a value at '[0].generated_text'" in info.value.explain()
    assert "generated_texts" in info.value.explain()  # the body's head shows what came back


def test_json_template_handler(session):
    handler = JSONTemplate({"inputs": "{prompt}", "parameters": "{params}", "stream": "{stream}"},
                           "[0].generated_text", stream_path="token.text", name="my-json")
    assert invoke(session, "tgi", SEED_PROMPT, handler).text == EXPECTED
    lmi = JSONTemplate('{"inputs": "Context: {prompt}", "parameters": "{params}"}', "generated_text")
    assert json.loads(lmi.encode("x", {"max_new_tokens": 5}))["inputs"] == "Context: x"
    with pytest.raises(HandlerError, match="choices"):
        JSONTemplate({"inputs": "{prompt}"}, "choices[0].text").decode(b'{"generated_text": "x"}')


class SeedHandler(LLMContentHandler):
    content_type = "application/json"
    accepts = "application/json"

    def transform_input(self, prompt, model_kwargs):
        return json.dumps({"inputs": prompt, "parameters": model_kwargs}).encode("utf-8")

    def transform_output(self, output):
        return json.loads(output.read().decode("utf-8"))[0]["generated_text"]


def test_langchain_style_handler_registers_and_works_unchanged(session):
    registry = Registry()
    registry.register("seed", SeedHandler())
    handler = registry.get("seed")
    assert invoke(session, "tgi", SEED_PROMPT, handler).text == EXPECTED
    streamed = stream(session, "tgi", SEED_PROMPT, handler)
    assert "".join(streamed) == EXPECTED  # collected and decoded once


def test_langchain_handler_failure_names_the_handler(session):
    class Broken(SeedHandler):
        def transform_output(self, output):
            return json.loads(output.read())["missing"]

    with pytest.raises(HandlerError) as info:
        invoke(session, "tgi", "hi", adapt(Broken(), "broken"))
    assert "broken" in info.value.explain() and "TypeError" in info.value.explain()


def test_presets_work_as_langchain_handlers():
    handler = REGISTRY.get("tgi")
    assert json.loads(handler.transform_input("hi", {"max_new_tokens": 2}))["parameters"] == {"max_new_tokens": 2}
    assert handler.transform_output(Body(b'[{"generated_text": "ok"}]')) == "ok"


def test_registry_rejects_unknown_and_preset_names():
    registry = Registry()
    with pytest.raises(ConfigError, match="Did you mean 'tgi'"):
        registry.get("tgj")
    with pytest.raises(ConfigError, match="preset name"):
        registry.register("tgi", SeedHandler())
    with pytest.raises(ConfigError, match="request template"):
        registry.get("json")
    registry.register("mine", SeedHandler())
    assert "mine" in registry.names()
    registry.remove("mine")
    assert "mine" not in registry.names()
    with pytest.raises(TypeError):
        registry.register("bad", object())


@pytest.mark.parametrize(("endpoint", "expected"), [
    ("tgi", "tgi"), ("tgi-messages", "tgi-messages"), ("lmi", "lmi"), ("llama2-chat", "llama2-chat"),
    ("flan-t5", "flan-t5"), ("embedding", "embedding")])
def test_detection_from_the_model_image(session, endpoint, expected):
    assert detect(session.sagemaker, endpoint).handler == expected
