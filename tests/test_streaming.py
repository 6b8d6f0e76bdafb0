"""The streaming decoder: any slicing of a stream gives the same text; bad input raises our errors."""

from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sm_magic.errors import HandlerError, SageMakerError, StreamError
from sm_magic.handlers.registry import Registry
from sm_magic.streaming import LineSplitter, StreamDecoder, decode_stream, payload_of

REGISTRY = Registry()
TOKENS = ["Elizabeth", " stayed", " 3", " days", " — ", "über", " 日本", " 🎉"]


def tgi_stream() -> bytes:
    lines = [b"data:" + json.dumps({"token": {"id": i, "text": t, "special": False}, "generated_text": None},
                                   ensure_ascii=False).encode() + b"\n\n" for i, t in enumerate(TOKENS)]
    final = {"token": {"id": 99, "text": "", "special": True}, "generated_text": "".join(TOKENS),
             "details": {"finish_reason": "stop", "generated_tokens": len(TOKENS)}}
    return b"".join(lines) + b"data:" + json.dumps(final).encode() + b"\n\n"


def lmi_stream(error: bool = False) -> bytes:
    lines = [json.dumps({"token": {"id": i, "text": t}}, ensure_ascii=False).encode() + b"\n"
             for i, t in enumerate(TOKENS)]
    tail = {"token": {"id": -1, "text": ""}, "generated_text": "", "details": {"finish_reason": "error"}} if error \
        else {"token": {"id": 99, "text": ""}, "generated_text": "".join(TOKENS)}
    return b"".join(lines) + json.dumps(tail).encode()  # no newline after the last line


def chat_stream(prefix: bytes = b"data: ") -> bytes:
    chunks = [{"object": "chat.completion.chunk", "choices": [{"delta": {"content": t}}]} for t in TOKENS]
    usage = {"object": "chat.completion.chunk", "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 8}}
    body = b"event: message\n: keep-alive comment\n"
    body += b"".join(prefix + json.dumps(c, ensure_ascii=False).encode() + b"\n\n" for c in chunks)
    body += prefix + json.dumps(usage).encode() + b"\n\n"
    return body + (b"data: [DONE]\n\n" if prefix else b"")


def text_of(parts, handler: str) -> tuple[str, dict]:
    usage: dict = {}
    text = ""
    for out in decode_stream(parts, REGISTRY.get(handler)):
        text += out.text
        usage.update(out.usage or {})
    return text, usage


SAMPLES = [("tgi", tgi_stream()), ("lmi", lmi_stream()), ("tgi-messages", chat_stream()),
           ("lmi-chat", chat_stream(prefix=b""))]


@pytest.mark.parametrize(("handler", "data"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_stream_survives_a_split_at_every_position(handler, data):
    expected = "".join(TOKENS)
    for cut in range(len(data) + 1):
        text, _ = text_of([data[:cut], data[cut:]], handler)
        assert text == expected, f"split at byte {cut}"


@pytest.mark.parametrize(("handler", "data"), SAMPLES, ids=[s[0] for s in SAMPLES])
def test_stream_survives_byte_by_byte_parts(handler, data):
    text, _ = text_of([data[i : i + 1] for i in range(len(data))], handler)
    assert text == "".join(TOKENS)


def test_multibyte_character_split_across_parts():
    data = "data:{\"token\": {\"text\": \"🎉\"}}\n".encode()
    cut = data.index("🎉".encode()) + 2  # inside the 4-byte emoji
    assert text_of([data[:cut], data[cut:]], "tgi")[0] == "🎉"


def test_last_line_without_newline_is_flushed_not_waited_for():
    data = b'{"token": {"text": "a"}}\n{"token": {"text": "b"}}'
    assert text_of(iter([data]), "lmi")[0] == "ab"


def test_done_ends_the_stream_and_usage_only_chunks_report_usage():
    text, usage = text_of([chat_stream() + b"data: {not json after done}\n"], "tgi-messages")
    assert text == "".join(TOKENS)
    assert usage == {"prompt_tokens": 5, "completion_tokens": 8}


def test_lmi_in_band_error_raises_stream_error():
    with pytest.raises(StreamError, match="error in the stream"):
        text_of([lmi_stream(error=True)], "lmi")


def test_tgi_error_event_raises_stream_error():
    with pytest.raises(StreamError):
        text_of([b'data:{"error": "Request failed during generation", "error_type": "generation"}\n\n'], "tgi")


def test_non_json_line_raises_handler_error_naming_the_handler():
    with pytest.raises(HandlerError) as info:
        text_of([b"data:{broken\n\n"], "tgi")
    assert "tgi" in info.value.explain()
    assert "{broken" in info.value.explain()


def test_stream_cut_inside_a_character_raises_handler_error():
    with pytest.raises(HandlerError, match="UTF-8"):
        text_of([b'{"token": {"text": "a"}}\n\xf0\x9f'], "lmi")


def test_non_streaming_handler_decodes_the_whole_body_once():
    body = json.dumps({"generated_texts": ["Three days."]}).encode()
    assert text_of([body[:5], body[5:]], "flan-t5")[0] == "Three days."


def test_line_splitter_and_payload_rules():
    splitter = LineSplitter()
    assert splitter.feed(b"a\r\nb") == ["a\r"]
    assert splitter.flush() == ["b"]
    assert payload_of("data: [DONE]") == "[DONE]"
    assert payload_of("event: x") is None and payload_of("") is None and payload_of("data:") is None
    assert payload_of("data:{\"a\":1}") == '{"a":1}'


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(SAMPLES), st.lists(st.integers(min_value=0, max_value=4000), max_size=30))
def test_any_split_of_any_sample_yields_the_same_text(sample, cuts):
    handler, data = sample
    points = sorted({c % (len(data) + 1) for c in cuts})
    parts = [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]
    assert text_of(parts, handler)[0] == "".join(TOKENS)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["tgi", "lmi", "tgi-messages", "lmi-chat", "flan-t5", "llama2-chat", "embedding", "text"]),
       st.lists(st.binary(max_size=40), max_size=6))
def test_arbitrary_bytes_give_text_or_our_error_never_a_crash(handler, parts):
    with contextlib.suppress(SageMakerError):
        text_of(parts, handler)


def test_lmi_error_is_raised_whatever_the_split():
    data = lmi_stream(error=True)
    for cut in range(len(data) + 1):
        with pytest.raises(StreamError):
            text_of([data[:cut], data[cut:]], "lmi")


def decoded(data: bytes, handler: str, cut: int | None = None) -> StreamDecoder:
    decoder = StreamDecoder(REGISTRY.get(handler))
    for _ in decoder.decode([data] if cut is None else [data[:cut], data[cut:]]):
        pass
    return decoder


def without_last_event(data: bytes) -> bytes:
    """The stream with its final event (TGI, LMI) or finish/[DONE] lines (chat) removed."""
    lines = data.rstrip(b"\n").split(b"\n")
    kept = [x for x in lines if b"generated_text\": \"" not in x and b"[DONE]" not in x and b"finish_reason" not in x]
    return b"\n".join(kept) + b"\n"


def test_complete_streams_have_their_end_marker_whatever_the_split():
    for handler, data in SAMPLES[:3]:
        for cut in range(0, len(data) + 1, 7):
            assert not decoded(data, handler, cut).truncated, (handler, cut)


@pytest.mark.parametrize("handler", ["tgi", "lmi", "tgi-messages"])
def test_a_stream_without_its_end_marker_is_truncated(handler):
    data = dict(SAMPLES)[handler]
    cut = without_last_event(data)
    assert cut != data
    decoder = decoded(cut, handler)
    assert decoder.truncated
    assert text_of([cut], handler)[0] == "".join(TOKENS)  # every token came; only the end marker did not


def test_a_chat_stream_ends_with_a_finish_reason_or_done():
    chunk = {"object": "chat.completion.chunk", "choices": [{"delta": {"content": "a"}, "finish_reason": None}]}
    line = b"data: " + json.dumps(chunk).encode() + b"\n\n"
    assert decoded(line, "tgi-messages").truncated
    assert not decoded(line + b"data: [DONE]\n\n", "tgi-messages").truncated
    chunk["choices"][0]["finish_reason"] = "length"
    assert not decoded(b"data: " + json.dumps(chunk).encode() + b"\n\n", "tgi-messages").truncated


def test_lmi_dynamic_batch_lines_have_no_end_marker_to_miss():
    assert not decoded(b'{"outputs": ["This"]}\n{"outputs": [" is"]}', "lmi").truncated


def test_a_tgi_stream_answered_without_streaming_is_complete():
    assert not decoded(b'[{"generated_text": "whole"}]', "tgi").truncated
